"""Gather a sweep: every job's overrides and metrics into one CSV, a grouped summary and a figure.

    anatomy-report multirun/2026-11-21/12-00-00-000000   # writes report.csv, report.md, report.png, report.html
                                                         # (report.png: the learned shifts, if the jobs measured any)
    anatomy-report SWEEP_DIR --metrics eval/shift/markdown eval/heldout_accuracy --over seed
    anatomy-report SWEEP_DIR --against intervention=none   # + each arm against none, seed by seed
    anatomy-report SWEEP_DIR --against intervention=none --choose markdown   # + each arm's setting chosen on validation
    anatomy-report SWEEP_DIR --against intervention=none --ignore select.match_top   # one none job serves every match_top

Jobs are grouped by their overrides except those named by --over (default: seed, threads); each metric is
shown as mean +/- sd over the group. A job that failed (its error.txt, or no metrics.json) is left out of
the means and of the baselines and listed with the first line of its error.
With `--against KEY=VALUE`, every job is also compared with its baseline job: the one with that
override and the same other overrides (the same seed; overrides under `KEY.` are ignored, so
`intervention.threshold` does not keep a filtering job from its `intervention=none` job; `--ignore`
names overrides the baseline does not depend on, such as `select.match_top` for `intervention=none`,
which uses no selection, so one `none` job per seed serves a grid of them). A learned
shift (`eval/shift*`, `eval/validation_shift*`) gets its reduction, 1 - job / baseline; any other
metric its ratio, job / baseline. The summary shows each as the value of the group's means, then the
value per job in the order of the --over overrides: "92% (57%, 112%, 119%)"; a reduction is "n/a"
where the baseline's shift is within 2 standard errors of 0. Where both jobs wrote `heldout.csv` for the
same held-out pairs, the job's held-out accuracy change against its baseline job is paired pair by
pair, with its standard error (`eval/heldout_accuracy_change`, `_se`), and listed per job:
"-0.040 (-0.080 ± 0.021, -0.030 ± 0.018, -0.010 ± 0.015)"; so is the validation accuracy's
(`eval/validation_accuracy_change`) where both wrote `validation.csv`.
With `--choose CONCEPT` (jobs with validation pairs and probes), each arm's setting is chosen on
validation alone (`choose`) and shown with its held-out numbers, in choice.md and choice.csv; with
`--cross-fit` the held-out half chooses too, and a setting both halves choose is scored on all pairs.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from anatomy.eval.accuracy import distinct_from_zero, mean_change

# The parts of a job's environment.json that can change its numbers (packages are compared one by one).
ENVIRONMENT = ("cpu", "torch_cpu_capability", "device", "cuda", "code")


def gather(sweep_dir: Path) -> pd.DataFrame:
    rows = []
    for hydra_dir in sorted(sweep_dir.glob("**/.hydra")):
        job = hydra_dir.parent
        overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
        row = {"job": str(job.relative_to(sweep_dir))}
        for item in overrides:
            key, _, value = str(item).partition("=")
            row[f"override/{key.lstrip('+~')}"] = re.sub(r"\\(.)", r"\1", value)  # as typed: Hydra's [group\:5] -> [group:5]
        metrics_file = job / "metrics.json"
        if metrics_file.exists():
            row.update(json.loads(metrics_file.read_text()))
        if (job / "environment.json").exists():
            env = json.loads((job / "environment.json").read_text())
            row.update({f"env/{key}": _flat(env.get(key)) for key in ENVIRONMENT})
            row.update({f"env/packages/{name}": _flat(v) for name, v in (env.get("packages") or {}).items()})
        # a job that failed after its audit has a metrics.json too: its error.txt says it failed
        error = job / "error.txt"
        if error.exists():
            row["status"], row["error"] = "failed", (error.read_text().splitlines() or [""])[0][:200]
        elif "eval/heldout_accuracy" in row or "audit/n_tested" in row:
            row["status"] = "ok"
        else:
            row["status"], row["error"] = "failed", "no metrics.json"
        rows.append(row)
    if not rows:
        raise SystemExit(f"anatomy-report: no job folders (with .hydra/) under {sweep_dir}")
    return pd.DataFrame(rows)


def mixed_environments(table: pd.DataFrame) -> list[str]:
    """One line per part of `environment.json` in which the sweep's jobs differ (the CPU's kernels,
    the GPU, a package version, the code's commit): their numbers may differ for that reason alone."""
    lines = []
    for column in (c for c in table.columns if c.startswith("env/")):
        seen = table.dropna(subset=[column]).groupby(column)["job"].apply(list)  # (jobs without the file: unknown)
        if len(seen) > 1:
            lines.append(f"{column.removeprefix('env/')}: " + "; ".join(
                f"{value} (jobs {', '.join(sorted(jobs, key=_natural))})" for value, jobs in seen.items()))
    return lines


def against_baseline(table: pd.DataFrame, against: str, metrics: list[str], sweep_dir: Path | None = None,
                     ignore: list[str] = ()) -> pd.DataFrame:
    """Per job, each metric's baseline value (`baseline/<m>`): the metric of the job with override
    `against` (KEY=VALUE) and the same other overrides, except those under `KEY.` and those named by
    `ignore` (or under them: overrides the baseline does not depend on); `baseline_job` names that job.
    The baseline jobs themselves, and jobs with no single such baseline, get none (see
    `without_baseline`). With `sweep_dir`, a job that has no `eval/heldout_accuracy_change` of its own
    (no in-run baseline) gets it from both jobs' heldout.csv."""
    key, _, value = against.partition("=")
    column = f"override/{key}"
    if not value or column not in table.columns:
        known = sorted(c.split("/", 1)[1] for c in table.columns if c.startswith("override/"))
        raise SystemExit(f"anatomy-report: --against must be KEY=VALUE with KEY a swept override ({', '.join(known)}); "
                         f"got {against!r}")
    ok = table[table["status"] == "ok"]
    same = [c for c in table.columns if c.startswith("override/") and not _under(c, [column, *_ignored(table, ignore)])]
    signature = _joined(ok, same, "\x1f")
    is_base = ok[column].astype(str) == value
    if not is_base.any():
        raise SystemExit(f"anatomy-report: no finished job has {against}")
    bases = signature[is_base]
    metrics = metrics + [se for se in map(_se_of, metrics) if se and se in table.columns and se not in metrics]
    baseline = pd.DataFrame(float("nan"), index=table.index, columns=[f"baseline/{m}" for m in metrics])
    baseline.insert(0, "baseline_job", pd.Series(None, index=table.index, dtype=object))
    table = table.copy()
    for change in CHANGES.values():  # a job's own (in-run baseline) stays; others are paired below
        for column in (change, f"{change}_se"):
            if column not in table.columns:
                table[column] = float("nan")
    for i in ok.index[~is_base]:
        found = bases.index[bases == signature[i]]
        if len(found) == 1:
            baseline.loc[i, "baseline_job"] = ok.loc[found[0], "job"]
            baseline.loc[i, baseline.columns[1:]] = ok.loc[found[0], metrics].to_numpy(dtype=float)
            for split, change in CHANGES.items():
                if sweep_dir is not None and pd.isna(table.loc[i, change]):
                    table.loc[i, [change, f"{change}_se"]] = paired_change(
                        sweep_dir / table.loc[i, "job"], sweep_dir / table.loc[found[0], "job"], split)
    for change in CHANGES.values():
        if table[change].isna().all():
            table = table.drop(columns=[change, f"{change}_se"])
    return pd.concat([table, baseline], axis=1)


def _ignored(table: pd.DataFrame, ignore: list[str]) -> list[str]:
    """The override columns of `--ignore`'s keys; a key no job overrides is a mistake, named."""
    unknown = [k for k in ignore if not any(_under(c, [f"override/{k}"]) for c in table.columns)]
    if unknown:
        known = sorted(c.split("/", 1)[1] for c in table.columns if c.startswith("override/"))
        raise SystemExit(f"anatomy-report: --ignore {' '.join(unknown)}: no job overrides "
                         f"{'it' if len(unknown) == 1 else 'them'} (swept overrides: {', '.join(known)})")
    return [f"override/{k}" for k in ignore]


def _under(column: str, keys: list[str]) -> bool:
    return any(column == k or column.startswith(f"{k}.") for k in keys)


def without_baseline(table: pd.DataFrame, against: str, ignore: list[str] = ()) -> list[str]:
    """A line naming the finished jobs that `against_baseline` found no single baseline for (none, or
    several, with the same other overrides): they are in no comparison, nor in `--choose`'s."""
    key, _, value = against.partition("=")
    column = f"override/{key}"
    ok = table[(table["status"] == "ok") & (table[column].astype(str) != value)]
    alone = ok[ok["baseline_job"].isna()]
    if alone.empty:
        return []
    shown = [c for c in alone.columns if c.startswith("override/") and c != "override/experiment"
             and not _under(c, [column, *_ignored(table, ignore)])]
    alone = alone.sort_values("job", key=lambda c: c.map(_natural))
    jobs = [f"{job} ({named or 'no other override'})" for job, named in zip(alone["job"], _named(alone, shown))]
    return [f"jobs without a baseline, left out of every comparison: {len(jobs)} {'has' if len(jobs) == 1 else 'have'} "
            f"no single finished job with {against} and the same other overrides (those under {key}. "
            f"{''.join(f'and {k} ' for k in ignore)}aside); run one with theirs: {'; '.join(jobs)}"]


# The accuracy's change against the baseline job, paired pair by pair, per split (`<split>.csv`).
CHANGES = {split: f"eval/{split}_accuracy_change" for split in ("heldout", "validation")}


def paired_change(job: Path, base: Path, split: str = "heldout") -> tuple[float, float]:
    """The accuracy's change on `split`'s pairs from the baseline job to this job, pair by pair, and
    its standard error; NaN unless both wrote <split>.csv (heldout.csv, validation.csv) for the same pairs."""
    files = [job / f"{split}.csv", base / f"{split}.csv"]
    if not all(f.exists() for f in files):
        return float("nan"), float("nan")
    mine, theirs = (pd.read_csv(f) for f in files)
    same = len(mine) == len(theirs) > 1 and all(
        mine[c].astype(str).tolist() == theirs[c].astype(str).tolist() for c in ("prompt", "chosen", "rejected"))
    if not same:
        return float("nan"), float("nan")
    return mean_change(mine["correct"], theirs["correct"])


def summarize(table: pd.DataFrame, metrics: list[str], over: list[str]) -> pd.DataFrame:
    keys = [c for c in table.columns if c.startswith("override/") and c.split("/", 1)[1] not in over]
    keys = [k for k in keys if k != "override/experiment"]
    ok = table[table["status"] == "ok"]
    ok = _in_order(ok, over)  # per-job values listed in the order of the --over overrides
    present = [m for m in metrics if m in ok.columns]
    grouped = ok.groupby(keys, dropna=False, sort=True) if keys else ok.groupby(lambda _: "all")
    mean, sd, n = grouped[present].mean(), grouped[present].std(ddof=1), grouped.size()
    out = pd.DataFrame(index=mean.index)
    out["n"] = n
    for m in present:
        out[m] = [f"{a:+.3f} ± {b:.3f}" if pd.notna(b) else f"{a:+.3f}" for a, b in zip(mean[m], sd[m])]
    for m in (m for m in present if f"baseline/{m}" in ok.columns):
        shift = is_shift(m)
        se = f"baseline/{_se_of(m)}" if shift and f"baseline/{_se_of(m)}" in ok.columns else None
        out[f"{m} {'reduction' if shift else 'ratio'}"] = [
            _versus(rows[m].to_numpy(), rows[f"baseline/{m}"].to_numpy(), shift,
                    None if se is None else rows[se].to_numpy()) for _, rows in grouped]
    for change in CHANGES.values():
        if change in ok.columns and f"{change}_se" in ok.columns and ok[change].notna().any():
            out[f"{change} (per job ± paired s.e.)"] = [_per_job(rows[change], rows[f"{change}_se"])
                                                         for _, rows in grouped]
    return out.reset_index()


def _per_job(values: pd.Series, errors: pd.Series) -> str:
    """The mean change, then each job's with its standard error: "-0.040 (-0.080 ± 0.021, ...)"."""
    pairs = [(v, e) for v, e in zip(values, errors) if pd.notna(v)]
    if not pairs:
        return ""
    return f"{np.mean([v for v, _ in pairs]):+.3f} ({', '.join(f'{v:+.3f} ± {e:.3f}' for v, e in pairs)})"


def is_shift(metric: str) -> bool:
    """A learned shift, on the probes or the validation probes: eval/shift*/x, eval/validation_shift*/x."""
    return metric.startswith(("eval/shift", "eval/validation_shift"))


def _se_of(metric: str) -> str | None:
    """The standard error's column of a learned shift: eval/shift_onset/x -> eval/shift_onset_se/x."""
    parts = metric.split("/")
    return "/".join([parts[0], parts[1] + "_se", *parts[2:]]) if is_shift(metric) and len(parts) > 2 else None


def _versus(values, baselines, reduction: bool, errors=None) -> str:
    """1 - value / baseline for a reduction, value / baseline otherwise: of the group's means (over
    the jobs that have a baseline), then per job, as "92% (57%, 112%, 119%)". A reduction is "n/a"
    where the baseline is within 2 of its standard errors (`errors`, per job) of 0."""
    def one(v, b, e=None):
        if not (pd.notna(v) and pd.notna(b)) or b == 0 or (reduction and not distinct_from_zero(b, e)):
            return "n/a"
        return f"{1 - v / b:.0%}" if reduction else f"{v / b:.2f}"

    errors = np.full(len(values), np.nan) if errors is None else np.asarray(errors, dtype=float)
    paired = [(v, b, e) for v, b, e in zip(values, baselines, errors) if pd.notna(b)]
    if not paired:
        return ""
    v, b, e = np.array(paired, dtype=float).T
    return f"{one(v.mean(), b.mean(), _mean_se(e))} ({', '.join(one(x, y, z) for x, y, z in paired)})"


def _mean_se(errors) -> float | None:
    """The standard error of a mean over jobs, from each job's own (None unless every one is known)."""
    errors = np.asarray(errors, dtype=float)
    return float(np.sqrt((errors**2).sum()) / len(errors)) if len(errors) and np.isfinite(errors).all() else None


def choose(table: pd.DataFrame, against: str, concept: str, min_reduction: float, over: list[str],
           cross_fit: bool = False) -> pd.DataFrame:
    """Per value of the --against key (each intervention), the setting chosen on validation alone:
    among its settings (its jobs grouped by the other overrides but `over`) whose reduction of
    `eval/validation_shift/<concept>` (of the means over the group's jobs) is at least `min_reduction`,
    the one with the highest `eval/validation_accuracy` ratio; if none reaches it, the one with the
    largest reduction. A reduction against a baseline shift within 2 standard errors of 0 is noise:
    such a setting is not chosen (an arm with no other: "n/a"). Next to the choice, its held-out
    numbers, which the choice did not read.

    `cross_fit`: the same rule applied to the held-out pairs and probes instead, so each half chooses
    for the other. Where both choose the same setting, neither half's number decided anything the
    other scores, and its accuracy ratio on all the pairs (both halves, pooled by their pair counts
    per job) is an honest estimate on twice the pairs, as is each job's paired change there (with
    the runs' heldout.csv and validation.csv); where they differ, there is none ("n/a")."""
    key = f"override/{against.partition('=')[0]}"
    need = [f"eval/validation_shift/{concept}", "eval/validation_accuracy",  # what the choice reads
            f"eval/shift/{concept}", "eval/heldout_accuracy"]  # what it reports
    lacking = [m for m in need if f"baseline/{m}" not in table.columns or table[f"baseline/{m}"].isna().all()]
    if lacking:
        why = ("choosing reads validation pairs and probes (data.validation_fraction > 0; for a user's own data, "
               "eval.validation_probes=FILE too)" if any("validation" in m for m in lacking) else
               f"the choice is reported on held-out pairs and on probes of {concept}")
        raise SystemExit(f"anatomy-report --choose {concept}: no job has {', '.join(lacking)} with a baseline job "
                         f"({against}); {why}, in every job")
    jobs = table[(table["status"] == "ok") & table[[f"baseline/{m}" for m in need]].notna().all(axis=1)]
    settings = [c for c in jobs.columns if c.startswith("override/") and c.split("/", 1)[1] not in over
                and c not in (key, "override/experiment")]  # (the intervention's own, intervention.threshold, too)
    label = pd.Series([name or "defaults" for name in _named(jobs, settings)], index=jobs.index)
    rows = []
    for arm, arm_jobs in jobs.groupby(key, sort=True):
        found = []
        for setting, group in arm_jobs.groupby(label[arm_jobs.index], sort=True):
            mean = group[need + [f"baseline/{m}" for m in need]].mean()
            ratio = [mean[m] / mean[f"baseline/{m}"] for m in need]
            found.append({"setting": setting, "jobs": len(group), "validation reduction": 1 - ratio[0],
                          "validation accuracy ratio": ratio[1], "held-out reduction": 1 - ratio[2],
                          "held-out accuracy ratio": ratio[3], "all pairs accuracy ratio": _pooled_ratio(group),
                          "all pairs accuracy change": _pooled_change(_in_order(group, over)),
                          # a reduction against a baseline shift within noise of 0 is none to choose by
                          "validation chooses by": _unless_noise(group, need[0], 1 - ratio[0]),
                          "held-out chooses by": _unless_noise(group, need[2], 1 - ratio[2])})
        best, meets = _rule(found, "validation", min_reduction)
        tried = "; ".join(f"{f['setting']}: {_percent(f['validation chooses by'])}, "
                          f"{f['validation accuracy ratio']:.2f}" for f in found)
        if best is None:
            rows.append({key.split("/", 1)[1]: arm, "chosen": "n/a", "jobs": 0,
                         "reached the reduction": f"n/a: the baseline's validation {concept} shift is within noise of 0",
                         "settings (validation reduction, accuracy ratio)": tried})
            continue
        row = {key.split("/", 1)[1]: arm, "chosen": best["setting"], "jobs": best["jobs"],
               f"validation {concept} reduction": f"{best['validation reduction']:.0%}",
               "validation accuracy ratio": f"{best['validation accuracy ratio']:.2f}",
               f"held-out {concept} reduction": f"{best['held-out reduction']:.0%}",
               "held-out accuracy ratio": f"{best['held-out accuracy ratio']:.2f}",
               "reached the reduction": "yes" if meets else "no: the largest reduction",
               "settings (validation reduction, accuracy ratio)": tried}
        if cross_fit:
            other, _ = _rule(found, "held-out", min_reduction)
            row["chosen on held-out"] = other["setting"] if other else "n/a"
            row["cross-fitted accuracy ratio (all pairs)"] = (
                f"{best['all pairs accuracy ratio']:.3f}" if other is best else "n/a: the halves choose differently")
            row["cross-fitted accuracy change (per job ± paired s.e.)"] = (
                best["all pairs accuracy change"] if other is best else "n/a: the halves choose differently")
        rows.append(row)
    return pd.DataFrame(rows)


def _unless_noise(group: pd.DataFrame, shift: str, reduction: float) -> float:
    """The reduction of `shift` (a mean over the group's jobs), or NaN where the baselines' mean shift
    is within 2 standard errors of 0."""
    se = f"baseline/{_se_of(shift)}"
    noise = _mean_se(group[se]) if se in group.columns else None
    return reduction if distinct_from_zero(group[f"baseline/{shift}"].mean(), noise) else float("nan")


def _rule(found: list[dict], half: str, min_reduction: float) -> tuple[dict | None, list[dict]]:
    """--choose's rule on one half ("validation" or "held-out"): among the settings whose shift
    reduction there reaches `min_reduction`, the highest accuracy ratio there, else the largest
    reduction; None if no reduction is measured. -> (chosen, the settings that reached it)"""
    meets = [f for f in found if f[f"{half} chooses by"] >= min_reduction]
    measured = [f for f in found if pd.notna(f[f"{half} chooses by"])]
    if not measured:
        return None, meets
    if meets:
        return max(meets, key=lambda f: f[f"{half} accuracy ratio"]), meets
    return max(measured, key=lambda f: f[f"{half} chooses by"]), meets


def _by_pairs(group: pd.DataFrame, heldout: pd.Series, validation: pd.Series) -> pd.Series:
    """Per job, a held-out and a validation number weighted by the two splits' pair counts: the
    number on all the pairs."""
    n_h, n_v = group["data/heldout"], group["data/validation"]
    return (heldout * n_h + validation * n_v) / (n_h + n_v)


def _pooled_ratio(group: pd.DataFrame) -> float:
    """Accuracy on all the pairs, held-out and validation (each job's two accuracies weighted by its
    pair counts), as a ratio of the group's mean to its baselines' mean; NaN without the counts."""
    if not {"data/heldout", "data/validation"} <= set(group.columns):
        return float("nan")
    pooled = [_by_pairs(group, group[f"{prefix}eval/heldout_accuracy"], group[f"{prefix}eval/validation_accuracy"])
              for prefix in ("", "baseline/")]
    return float(pooled[0].mean() / pooled[1].mean())


def _pooled_change(group: pd.DataFrame) -> str:
    """Each job's paired accuracy change against its baseline on all the pairs, held-out and
    validation: the two splits' paired changes weighted by their pair counts (the mean over all the
    pairs), with the standard error of that weighted mean of two independent halves; "" without
    the per-split changes (heldout.csv and validation.csv in both jobs) or the counts."""
    columns = ["data/heldout", "data/validation", *CHANGES.values(), *(f"{c}_se" for c in CHANGES.values())]
    if not set(columns) <= set(group.columns) or group[columns].isna().any(axis=None):
        return ""
    (d_h, d_v), (se_h, se_v) = ([group[f"{c}{tail}"] for c in CHANGES.values()] for tail in ("", "_se"))
    n_h, n_v = group["data/heldout"], group["data/validation"]
    return _per_job(_by_pairs(group, d_h, d_v), np.sqrt((n_h * se_h) ** 2 + (n_v * se_v) ** 2) / (n_h + n_v))


def _in_order(frame: pd.DataFrame, over: list[str]) -> pd.DataFrame:
    """Jobs in the order of the --over overrides (seed 0, 1, 2, not 0, 1, 10), as the summary lists them."""
    order = [c for c in (f"override/{o}" for o in over) if c in frame.columns]
    if not order:
        return frame
    return frame.sort_values(order, kind="stable", key=lambda c: pd.to_numeric(c, errors="coerce").fillna(float("inf")))


def _percent(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.0%}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="anatomy-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metrics", nargs="*", default=None,
                        help="metrics to summarize (default: eval/shift/*, eval/heldout_accuracy*, "
                             "eval/validation_accuracy* and eval/validation_shift/*, or audit/n_* for audits)")
    parser.add_argument("--over", nargs="*", default=["seed", "threads"],
                        help="overrides to aggregate over (default: seed, threads)")
    parser.add_argument("--against", default=None, metavar="KEY=VALUE",
                        help="compare each job with the job that has this override and the same others "
                             "(e.g. intervention=none): shift reductions and metric ratios")
    parser.add_argument("--ignore", nargs="+", default=[], metavar="KEY",
                        help="with --against: overrides the baseline does not depend on (e.g. select.match_top for "
                             "intervention=none): a job is paired with the baseline job whatever its value of these")
    parser.add_argument("--choose", default=None, metavar="CONCEPT",
                        help="with --against: per intervention, the setting chosen on validation pairs and probes "
                             "(see `choose`), with its held-out numbers; writes choice.md and choice.csv")
    parser.add_argument("--min-reduction", type=float, default=0.8,
                        help="--choose: the validation shift reduction a setting must reach (default 0.8)")
    parser.add_argument("--cross-fit", action="store_true",
                        help="--choose: also apply the rule to the held-out half; where both halves choose the same "
                             "setting, its accuracy ratio and paired change on all the pairs")
    args = parser.parse_args(argv)
    if args.choose and not args.against:
        parser.error("--choose needs --against (e.g. --against intervention=none)")
    if args.ignore and not args.against:
        parser.error("--ignore needs --against (e.g. --against intervention=none --ignore select.match_top)")
    if args.cross_fit and not args.choose:
        parser.error("--cross-fit needs --choose CONCEPT")
    table = gather(args.sweep_dir)
    metrics = args.metrics or [c for c in table.columns if c.startswith(("eval/shift/", "eval/heldout_accuracy",
                                                                          "eval/validation_accuracy",
                                                                          "eval/validation_shift/"))
                               and "baseline" not in c and "_accuracy_change" not in c] or [c for c in table.columns if c.startswith("audit/n_")]
    if args.against:
        compared = metrics + ([f"eval/validation_shift/{args.choose}", "eval/validation_accuracy",
                               f"eval/shift/{args.choose}", "eval/heldout_accuracy"] if args.choose else [])
        table = against_baseline(table, args.against, [m for m in dict.fromkeys(compared) if m in table.columns],
                                 args.sweep_dir, args.ignore)
    summary = summarize(table, metrics, args.over)
    table.to_csv(args.sweep_dir / "report.csv", index=False)
    text = summary.to_markdown(index=False) if _has_tabulate() else summary.to_string(index=False)
    failed = [f"{row['job']} ({row['error']})" for _, row in table[table["status"] == "failed"].iterrows()]
    mixed = mixed_environments(table)
    if mixed:
        mixed = ["the jobs ran on different machines, software or code; numbers can differ for that alone "
                 "(README, Reproducing a run):", *mixed]
    alone = without_baseline(table, args.against, args.ignore) if args.against else []
    ignored = ([f"each job is paired with its {args.against} job whatever its {', '.join(args.ignore)} (--ignore)"]
               if args.ignore else [])
    notes = ([f"failed jobs: {', '.join(failed)}"] if failed else []) + ignored + alone + mixed
    (args.sweep_dir / "report.md").write_text(text + "".join(f"\n\n{n}" for n in notes) + "\n")
    figure = plot(table, args.over, args.sweep_dir / "report.png")
    write_html(args.sweep_dir / "report.html", summary, figure, notes)
    print(text)
    for line in ignored + alone + mixed:
        print(line)
    if args.choose:
        chosen = choose(table, args.against, args.choose, args.min_reduction, args.over, args.cross_fit)
        shown = chosen.to_markdown(index=False) if _has_tabulate() else chosen.to_string(index=False)
        rule = (f"chosen on validation alone: per {args.against.partition('=')[0]}, among the settings that remove "
                f"at least {args.min_reduction:.0%} of {args.choose}'s shift on the validation probes, the highest "
                "validation accuracy ratio; the held-out numbers are on pairs and probes the choice did not read"
                + ("; cross-fitted: the same rule on the held-out half, and where both halves choose the same setting, "
                   "its accuracy ratio and paired change on all the pairs" if args.cross_fit else ""))
        (args.sweep_dir / "choice.md").write_text(f"{rule}\n\n{shown}\n" + "".join(f"\n{line}\n" for line in ignored + alone))
        chosen.to_csv(args.sweep_dir / "choice.csv", index=False)
        print(f"\n{rule}\n{shown}")
    wrote = "report.csv, report.md, " + ("report.png, " if figure else "") + "report.html" + (
        ", choice.md, choice.csv" if args.choose else "")
    print(f"\n{len(table)} jobs ({len(failed)} failed); wrote {wrote} "
          f"in {args.sweep_dir}")


def plot(table: pd.DataFrame, over: list[str], path: Path) -> Path | None:
    """Each concept's learned shift by the swept setting, mean with sd error bars over `over` (seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"]
    shifts = sorted(c for c in ok.columns if c.startswith("eval/shift/"))
    keys = [c for c in ok.columns if c.startswith("override/") and c.split("/", 1)[1] not in over
            and c != "override/experiment"]
    if not shifts or ok.empty:
        return None
    label = _joined(ok, keys, " ") if keys else pd.Series("all", index=ok.index)
    groups = sorted(label.unique())
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(shifts) * max(1, len(groups)) / 3), 4))
    width = 0.8 / len(groups)
    for i, g in enumerate(groups):
        rows = ok[label == g]
        mean, sd = rows[shifts].mean(), rows[shifts].std(ddof=1).fillna(0)
        ax.bar(np.arange(len(shifts)) + i * width, mean.values, width, yerr=sd.values, capsize=3, label=g)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(shifts)) + width * (len(groups) - 1) / 2)
    ax.set_xticklabels([s.split("/")[-1] for s in shifts], rotation=20)
    ax.set_ylabel("learned shift (log-prob margin change)")
    ax.set_title(f"learned shift per concept, mean ± sd over {', '.join(over) or 'jobs'}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_html(path: Path, summary: pd.DataFrame, figure: Path | None, notes: list[str]) -> None:
    import base64
    import html

    img = ""
    if figure is not None:
        data = base64.b64encode(figure.read_bytes()).decode()
        img = f'<img alt="learned shift per concept" src="data:image/png;base64,{data}">'
    paragraphs = "".join(f"<p>{html.escape(note)}</p>" for note in notes)
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>anatomy sweep report</title></head>"
                    f"<body><h1>anatomy sweep report</h1>{img}{summary.to_html(index=False)}{paragraphs}</body></html>\n")


def _natural(job: str) -> tuple:
    """Job folders in number order: 2 before 10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in job.split("/"))


def _flat(value) -> str:
    """One comparable string per value (a record's None is "null", not a missing value)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _named(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Per row, its overrides among `columns` as the command line gave them (`KEY=VALUE ...`)."""
    return [" ".join(f"{c.split('/', 1)[1]}={v}" for c, v in zip(columns, row) if pd.notna(v))
            for row in frame[columns].itertuples(index=False)]


def _joined(frame: pd.DataFrame, columns: list[str], sep: str) -> pd.Series:
    """Per row, the values of `columns` joined by `sep` (an override a job lacks counts as "")."""
    return pd.Series([sep.join(map(str, row)) for row in frame[columns].fillna("").itertuples(index=False)],
                     index=frame.index, dtype=object)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
