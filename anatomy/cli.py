"""The `anatomy` command: compose the config, run the pipeline, print a one-screen summary.

    anatomy                                        # default audit: synthetic data, tiny model, trained SAE
    anatomy data=local data.path=pairs.jsonl       # your own preference file
    anatomy experiment=audit_hh_rlhf               # a study from experiments/
    anatomy -m hypothesis.alpha=0.01,0.05          # a sweep (one run folder per job)
    anatomy --cfg job                              # print the composed config and exit

Every run writes hypotheses.csv, hypotheses.md, metrics.json and .hydra/ into its own folder.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import hydra
from omegaconf import DictConfig

log = logging.getLogger("anatomy")
# configs/ sits beside the package in the repository (the README installs it editable).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    import torch
    from hydra.core.hydra_config import HydraConfig

    from anatomy.outputs import summary
    from anatomy.pipeline import run

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    seed_everything(int(cfg.seed))
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    metrics = run(cfg, out_dir)
    print(summary(metrics, out_dir / "hypotheses.csv"))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
