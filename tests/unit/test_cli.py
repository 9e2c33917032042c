"""The job's signal handling: SIGTERM stops a job as Ctrl-C does, only while the job runs."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from anatomy.cli import Terminated, sigterm_as_interrupt


def test_sigterm_raises_terminated_inside_and_the_previous_handler_is_back_after():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated, match="stopped by SIGTERM"):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here at the latest
    assert signal.getsignal(signal.SIGTERM) is before
    assert issubclass(Terminated, KeyboardInterrupt)  # so the CLI records it as an interruption


def test_an_ignored_sigterm_stays_ignored():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def job():
        with sigterm_as_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert seen == [before]


def test_the_environment_record_says_what_the_numbers_came_from():
    import json
    import subprocess
    from pathlib import Path

    import torch

    from anatomy.environment import environment

    record = json.loads(json.dumps(environment("cpu")))  # it is JSON as written
    assert record["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert record["packages"]["anatomy"] and record["packages"]["trl"] and record["packages"]["sae-lens"]
    assert record["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["torch_threads"] == torch.get_num_threads() and record["device"] == "cpu"
    root = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        assert record["code"] is None  # not a git checkout: the package version says it
    else:
        assert record["code"]["commit"] == head.stdout.strip()
