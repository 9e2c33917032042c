"""Score trained runs on the *default* synthetic data's held-out pairs (same seed and size).

A run trained on other data (experiment=markdown_independent) is scored on the pairs every
intervention_comparison job is scored on, so its held-out accuracy can be compared with theirs. The
reference is the run's own starting model, loaded through the stage cache (set ANATOMY_CACHE as
for the run, or it is rebuilt). Prints accuracy on all held-out pairs, on those where markdown does
not differ, and on those where it does.

    python experiments/score_heldout.py multirun/DATE/TIME/0 multirun/DATE/TIME/1 ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from anatomy.data.synthetic import SyntheticData
from anatomy.eval.scoring import score
from anatomy.models.hf import load_pretrained


def accuracy(margin: np.ndarray) -> float:
    return float(((margin > 0) + 0.5 * (margin == 0)).mean()) if len(margin) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (with .hydra/config.yaml and model/)")
    ap.add_argument("--concept", default="markdown", help="split the held-out pairs by this concept")
    args = ap.parse_args()
    for run in args.runs:
        if not (run / ".hydra" / "config.yaml").is_file():  # e.g. a sweep's multirun.yaml
            print(f"{run}: skipped, not a run folder")
            continue
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        if cfg.trainer._target_ != "anatomy.trainers.dpo.DPO":
            raise SystemExit(f"{run}: scores DPO runs only (implicit reward margins)")
        data = instantiate(cfg.data, _convert_="all")
        default = SyntheticData(n_pairs=data.n_pairs, heldout_fraction=data.heldout_fraction, seed=data.seed).load()
        reference, _ = instantiate(cfg.model, _convert_="all").load(data.load().texts())
        policy = load_pretrained(str(run / "model"))
        chosen = [(p.prompt, p.chosen) for p in default.heldout]
        rejected = [(p.prompt, p.rejected) for p in default.heldout]

        def margin(m):
            return score(m.model, m.tokenizer, chosen, "dpo", cfg.eval.max_length) - score(
                m.model, m.tokenizer, rejected, "dpo", cfg.eval.max_length)

        implicit = margin(policy) - margin(reference)
        same = np.array([(args.concept in p.concepts_chosen) == (args.concept in p.concepts_rejected)
                         for p in default.heldout])
        print(f"{run}: seed {data.seed}, {len(implicit)} default held-out pairs: accuracy {accuracy(implicit):.3f}; "
              f"where {args.concept} does not differ {accuracy(implicit[same]):.3f} ({same.sum()}), "
              f"where it does {accuracy(implicit[~same]):.3f} ({(~same).sum()})")


if __name__ == "__main__":
    main()
