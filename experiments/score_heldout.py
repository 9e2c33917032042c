"""Score trained DPO runs on the *default* synthetic data's held-out pairs (same seed and size).

A run trained on other data (experiment=markdown_independent) is scored, by the evaluation's own
code, on the pairs every intervention_comparison job is scored on, so its held-out accuracy can be
compared with theirs. The reference is the run's own starting model, loaded through the stage cache
(set ANATOMY_CACHE as for the run, or it is rebuilt). Prints accuracy on all held-out pairs, on
those where the concept does not differ, and on those where it does.

    python experiments/score_heldout.py multirun/DATE/TIME/*
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from anatomy.data.synthetic import SyntheticData
from anatomy.models.hf import load_pretrained
from anatomy.trainers.common import Trained


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
        if not isinstance(data, SyntheticData):
            raise SystemExit(f"{run}: scores runs on synthetic data only (data={cfg.data._target_})")
        heldout = SyntheticData(n_pairs=data.n_pairs, heldout_fraction=data.heldout_fraction, seed=data.seed).load().heldout
        reference, _ = instantiate(cfg.model, _convert_="all").load(data.load().texts())
        policy = load_pretrained(str(run / "model"))
        trained = Trained("dpo", policy.model, reference.model, policy.tokenizer, {})
        m, _ = instantiate(cfg.eval, _convert_="all").run(trained, heldout, [], None)
        acc, n = m["eval/heldout_accuracy"], len(heldout)
        same, n_same = m[f"eval/heldout_accuracy_same/{args.concept}"], int(m[f"eval/heldout_n_same/{args.concept}"])
        differ = (acc * n - same * n_same) / (n - n_same)
        print(f"{run}: seed {data.seed}, {n} default held-out pairs: accuracy {acc:.3f}; where {args.concept} "
              f"does not differ {same:.3f} ({n_same}), where it does {differ:.3f} ({n - n_same})")


if __name__ == "__main__":
    main()
