"""The stage cache's keys: an entry is reused for the same key only, and a key names the code that
computes the entry (`code_digest` of `code_closure`: `stage_code`), so numbers computed by older code
are never served."""

from __future__ import annotations

import sys
import types

from anatomy.cache import cached_dir, code_closure, code_digest, digest, stage_code


def _module(name: str, source: str) -> types.ModuleType:
    import linecache

    path = f"<anatomy-test-{name}>"
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)  # what inspect reads
    module = types.ModuleType(name)
    module.__file__ = path
    return module


def test_code_digest_follows_the_source():
    a, same, edited = _module("a", "X = 1\n"), _module("b", "X = 1\n"), _module("c", "X = 2\n")
    assert code_digest(a) == code_digest(same)
    assert code_digest(a) != code_digest(edited)
    assert code_digest(a, edited) != code_digest(edited, a)  # order is part of it


def test_an_entry_keyed_by_other_code_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("ANATOMY_CACHE", str(tmp_path))
    monkeypatch.delenv("ANATOMY_NO_CACHE", raising=False)
    builds = []

    def build(folder):
        builds.append(folder)
        (folder / "value").write_text(str(len(builds)))

    old, new = _module("m1", "def f(): return 1\n"), _module("m2", "def f(): return 2\n")
    killed = tmp_path / "stage" / f".tmp-{digest({'x': 1, 'code': code_digest(old)})}-99999999"
    (killed / "half").mkdir(parents=True)  # a killed build's folder: removed by the next build of that entry
    first, hit1 = cached_dir("stage", {"x": 1, "code": code_digest(old)}, build)
    assert not killed.exists() and [p.name for p in (tmp_path / "stage").glob(".tmp-*")] == []
    again, hit2 = cached_dir("stage", {"x": 1, "code": code_digest(old)}, build)
    other, hit3 = cached_dir("stage", {"x": 1, "code": code_digest(new)}, build)
    assert (hit1, hit2, hit3) == (False, True, False) and len(builds) == 2
    assert first == again != other and (other / "value").read_text() == "2"


def test_stage_code_follows_the_package_code_a_stage_uses(monkeypatch):
    """A stage's code key covers the anatomy modules it uses, transitively, and nothing else."""
    import json as outside  # not anatomy: never part of the key

    deep = _module("anatomy._t_deep", "def f(): return 1\n")
    mid = _module("anatomy._t_mid", "from anatomy._t_deep import f\n")
    top = _module("anatomy._t_top", "import anatomy._t_mid\n")

    def f():  # what `from anatomy._t_deep import f` binds in mid: a function of the package
        return 1

    f.__module__ = deep.__name__
    deep.f, mid.f, top.mid, top.json = f, f, mid, outside
    for module in (deep, mid, top):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    assert [m.__name__ for m in code_closure(top)] == ["anatomy._t_deep", "anatomy._t_mid", "anatomy._t_top"]
    before = stage_code(top.__name__)
    edited = _module("anatomy._t_deep", "def f(): return 2\n")  # an edit two imports away
    edited.f = f
    monkeypatch.setitem(sys.modules, edited.__name__, edited)
    assert stage_code(top.__name__) != before



def test_without_the_cache_a_stage_folder_lasts_until_the_process_ends(tmp_path):
    """ANATOMY_NO_CACHE builds every stage in a temporary folder, readable while the process runs
    and removed when it exits (a benchmark or test run leaves nothing behind in the temp dir)."""
    import os
    import subprocess
    from pathlib import Path

    script = ("from pathlib import Path\nfrom anatomy.cache import cached_dir\n"
              "folder, hit = cached_dir('stage', {'x': 1}, lambda f: (f / 'value').write_text('1'))\n"
              "assert not hit and (folder / 'value').read_text() == '1'\nprint(folder)\n")
    env = {**os.environ, "ANATOMY_NO_CACHE": "1", "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    folder = Path(out.stdout.strip())
    assert folder.parent.parent == tmp_path and folder.name.startswith("stage-") and not folder.parent.exists()
    # a killed run's folder (its process gone) is removed by the next run; a live process's is kept
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed, live = tmp_path / f"anatomy-no-cache-{dead.stdout.strip()}", tmp_path / f"anatomy-no-cache-{os.getpid()}"
    other = tmp_path / "anatomy-no-cache-notes"  # (not a process id: not ours)
    for orphan in (killed, live, other):
        (orphan / "model-x").mkdir(parents=True)
    subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert not killed.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
