"""What every benchmark script sets up before importing torch: offline, no progress bars, a stage
cache of its own (default $TMPDIR/anatomy-bench-cache), the checkout on sys.path; and the CPU name
for the printed report. `import _setup` first (the scripts run as `python tests/benchmarks/X.py`,
so their own folder is on sys.path)."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("ANATOMY_CACHE", os.path.join(tempfile.gettempdir(), "anatomy-bench-cache"))
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars inside the timings
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout, uninstalled


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def default_study(source=None, model_cfg=None, sae_cfg=None):
    """The default study's data (or `source`'s, e.g. an `HHRLHFData`), with its tiny LM and SAE
    (or `model_cfg`'s and `sae_cfg`'s: a `TinyModel` and `TrainSAE` of other sizes; from the bench
    cache: the first run builds them). -> (data, model, sae)"""
    import time

    from anatomy.data.synthetic import SyntheticData
    from anatomy.models.tiny import TinyModel
    from anatomy.saes.train import TrainSAE

    print(f"ANATOMY_CACHE={os.environ['ANATOMY_CACHE']} (data, tiny LM and SAE; the first run builds them, minutes)")
    t0 = time.perf_counter()
    data = (source or SyntheticData()).load()
    texts = data.texts()
    model, model_hit = (model_cfg or TinyModel()).load(texts)
    sae, sae_hit = (sae_cfg or TrainSAE()).load(model, texts, model.path)
    print(f"set-up {time.perf_counter() - t0:.1f} s (tiny model {'cached' if model_hit else 'built'}, "
          f"SAE {'cached' if sae_hit else 'trained'}; later runs reuse the cache)")
    return data, model, sae
