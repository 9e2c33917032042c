"""What a run ran on, written to its folder as environment.json beside .hydra/ (the config).

The same config gives the same numbers on the same kind of machine. Across machines, torch's
CPU kernels (AVX2, AVX-512) and the BLAS library round floats differently; trained components (the
tiny LM, the SAE) amplify that, so a study's numbers can differ beyond the last digit. This record
says which versions, CPU kernels, threads and device produced a run's numbers, and which commit of
anatomy (with uncommitted changes or not) the checkout was at when the run started, so two runs
that disagree can be told apart. `anatomy-report` names whatever differs among a sweep's jobs.

    python -m anatomy.environment      # print this machine's record
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("anatomy", "torch", "transformers", "trl", "sae-lens", "transformer-lens", "accelerate", "datasets",
            "tokenizers", "numpy", "scipy", "pandas", "hydra-core", "omegaconf", "wandb")


def environment(device: str | None = None) -> dict:
    """Versions, machine, torch's CPU kernels and threads, the GPU (where one is used), the code's commit."""
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": {name: _version(name) for name in PACKAGES},
        "code": _commit(Path(__file__).resolve().parents[1]),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],  # this process's (a parallel launcher's worker's)
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit(root: Path) -> dict | None:
    """The git commit of the anatomy checkout, and whether it has uncommitted changes (None if not a
    git checkout, as for an installed wheel: the package version then says it)."""
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "uncommitted_changes": bool(dirty.stdout.strip())}


if __name__ == "__main__":
    print(json.dumps(environment(), indent=2))
