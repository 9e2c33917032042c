"""anatomy-report's comparison of each job with its baseline job (`--against`), on hand-made job folders."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from anatomy.report import main as report


def job(sweep, name, overrides, metrics=None):
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path):
    """none and ablation at seeds 2, 10, 0 (folder order differs from seed order), a filtering job with
    its own sub-override, and an ablation job that failed."""
    sweep = tmp_path / "sweep"
    n = 0
    for seed, base_shift, abl_shift in [(2, 2.0, 1.0), (10, 1.0, -1.0), (0, 4.0, 1.0)]:
        job(sweep, str(n), ["intervention=none", f"seed={seed}"],
            {"eval/shift/markdown": base_shift, "eval/heldout_accuracy": 0.8})
        job(sweep, str(n + 1), ["intervention=feature_ablation", f"seed={seed}"],
            {"eval/shift/markdown": abl_shift, "eval/heldout_accuracy": 0.6 if seed == 0 else 0.8})
        n += 2
    job(sweep, "filter", ["intervention=data_filtering", "intervention.threshold=1.0", "seed=0"],
        {"eval/shift/markdown": 0.0, "eval/heldout_accuracy": 0.4})
    job(sweep, "failed", ["intervention=feature_steering", "seed=0"])
    return sweep


def test_against_baseline_pairs_each_job_with_its_seed(sweep):
    report([str(sweep), "--metrics", "eval/shift/markdown", "eval/heldout_accuracy", "--against", "intervention=none"])
    table = pd.read_csv(sweep / "report.csv")
    ablation = table[table["override/intervention"] == "feature_ablation"].set_index("override/seed")
    assert ablation.loc[10, "baseline/eval/shift/markdown"] == 1.0 and ablation.loc[0, "baseline/eval/shift/markdown"] == 4.0
    assert table[table["override/intervention"] == "none"]["baseline/eval/shift/markdown"].isna().all()
    summary = (sweep / "report.md").read_text()
    # ablation: means 1/3 against 7/3 -> 86% removed; per seed, in seed order 0, 2, 10: 75%, 50%, 200%
    assert "86% (75%, 50%, 200%)" in summary
    # accuracy: (0.6 + 0.8 + 0.8) / 3 / 0.8 = 0.92; per seed 0.75, 1.00, 1.00
    assert "0.92 (0.75, 1.00, 1.00)" in summary
    # filtering is compared with none at seed 0 although it has intervention.threshold and none has not
    assert "100% (100%)" in summary and "0.50 (0.50)" in summary
    assert "failed jobs: failed (no metrics.json)" in summary


def test_a_job_without_a_baseline_is_named_not_left_out_silently(sweep, capsys):
    report([str(sweep), "--metrics", "eval/shift/markdown", "--against", "intervention=none"])
    assert "without a baseline" not in (sweep / "report.md").read_text() + capsys.readouterr().out  # all have one
    # a setting of the ablation arm that no none job shares, and a seed with two none jobs: neither has
    # a single baseline, so neither is compared, and the report says so (before, both were dropped silently)
    job(sweep, "top1", ["intervention=feature_ablation", "select.match_top=1", "seed=0"],
        {"eval/shift/markdown": 0.5, "eval/heldout_accuracy": 0.8})
    for name in ("twin_a", "twin_b"):
        job(sweep, name, ["intervention=none", "seed=5"], {"eval/shift/markdown": 2.0, "eval/heldout_accuracy": 0.8})
    job(sweep, "twins", ["intervention=feature_ablation", "seed=5"],
        {"eval/shift/markdown": 1.0, "eval/heldout_accuracy": 0.8})
    report([str(sweep), "--metrics", "eval/shift/markdown", "--against", "intervention=none"])
    said = capsys.readouterr().out
    table = pd.read_csv(sweep / "report.csv", dtype={"job": str, "baseline_job": str}).set_index("job")
    assert table.loc["1", "baseline_job"] == "0" and table.loc["filter", "baseline_job"] == "4"  # seed 2; seed 0
    assert table.loc[["top1", "twins", "0", "failed"], "baseline_job"].isna().all()
    for text in (said, (sweep / "report.md").read_text(), (sweep / "report.html").read_text()):
        assert ("jobs without a baseline, left out of every comparison: 2 have no single finished job with "
                "intervention=none and the same other overrides") in text
        assert "top1 (seed=0 select.match_top=1)" in text and "twins (seed=5)" in text
        assert "filter (" not in text and "failed (seed=0)" not in text  # matched; failed is said apart


def test_ignore_pairs_a_job_with_a_baseline_that_does_not_depend_on_an_override(sweep, capsys):
    """`--ignore select.match_top`: the none job of each seed serves every match_top of the ablation
    arm (none uses no selection), and the report says it paired them so. Two none jobs that then
    match (one with a match_top of its own) are no single baseline, and that job is named."""
    job(sweep, "top1", ["intervention=feature_ablation", "select.match_top=1", "seed=0"],
        {"eval/shift/markdown": 2.0, "eval/heldout_accuracy": 0.4})
    job(sweep, "top2", ["intervention=feature_ablation", "select.match_top=2", "seed=10"],
        {"eval/shift/markdown": 0.5, "eval/heldout_accuracy": 0.8})
    args = [str(sweep), "--metrics", "eval/shift/markdown", "--against", "intervention=none"]
    report(args)
    assert pd.read_csv(sweep / "report.csv").set_index("job").loc[["top1", "top2"], "baseline_job"].isna().all()
    capsys.readouterr()
    report([*args, "--ignore", "select.match_top"])
    said = capsys.readouterr().out
    table = pd.read_csv(sweep / "report.csv", dtype={"job": str, "baseline_job": str}).set_index("job")
    assert table.loc["top1", "baseline_job"] == "4" and table.loc["top2", "baseline_job"] == "2"  # seeds 0, 10
    assert table.loc["top1", "baseline/eval/shift/markdown"] == 4.0
    assert table.loc["1", "baseline_job"] == "0"  # the other pairs are as before
    summary = (sweep / "report.md").read_text()
    assert summary.count("50% (50%)") == 2 and said.count("50% (50%)") == 2  # top1 (2.0 against seed 0's 4.0), top2
    assert "without a baseline" not in summary
    for text in (said, summary):
        assert "each job is paired with its intervention=none job whatever its select.match_top (--ignore)" in text
    job(sweep, "none_top1", ["intervention=none", "select.match_top=1", "seed=0"],
        {"eval/shift/markdown": 3.0, "eval/heldout_accuracy": 0.8})
    report([*args, "--ignore", "select.match_top"])
    table = pd.read_csv(sweep / "report.csv", dtype={"job": str, "baseline_job": str}).set_index("job")
    assert table.loc[["top1", "5", "filter"], "baseline_job"].isna().all()  # seed 0: two none jobs now
    assert table.loc["top2", "baseline_job"] == "2" and table.loc["1", "baseline_job"] == "0"
    assert ("(those under intervention. and select.match_top aside); run one with theirs: 5 (seed=0); "
            "filter (seed=0); top1 (seed=0)") in (sweep / "report.md").read_text()
    with pytest.raises(SystemExit, match=r"--ignore select\.top: no job overrides it \(swept overrides: "):
        report([*args, "--ignore", "select.top"])  # a typo is named, not ignored


def test_a_reduction_of_a_baseline_within_noise_of_zero_is_not_given(sweep):
    """With the shifts' standard errors in the jobs' metrics, a baseline shift within 2 of them of 0
    gives "n/a", per job and for the mean, instead of a huge percentage of noise."""
    for name, se in (("0", 1.5), ("2", 0.1), ("4", 0.1)):  # none at seeds 2 (shift 2.0), 10 (1.0), 0 (4.0)
        metrics = json.loads((sweep / name / "metrics.json").read_text())
        (sweep / name / "metrics.json").write_text(json.dumps({**metrics, "eval/shift_se/markdown": se}))
    report([str(sweep), "--metrics", "eval/shift/markdown", "--against", "intervention=none"])
    summary = (sweep / "report.md").read_text()
    assert "86% (75%, n/a, 200%)" in summary  # seed 2's +2.0 is within 2 x 1.5 of 0; the mean's s.e. is 0.50
    table = pd.read_csv(sweep / "report.csv")
    assert table["baseline/eval/shift_se/markdown"].notna().sum() == 4  # the three ablation jobs and filtering


def test_a_job_that_failed_after_its_audit_is_neither_averaged_nor_a_baseline(sweep):
    """The pipeline writes metrics.json (audit/*) before training; a job that then failed has its
    error.txt, and the report counts it as failed, not as a finished job with fewer metrics."""
    job(sweep, "late", ["intervention=none", "seed=7"], {"audit/n_tested": 400.0, "eval/shift/markdown": 9.0})
    (sweep / "late" / "error.txt").write_text("RuntimeError: training diverged\n\nTraceback ...\n")
    job(sweep, "late_ablation", ["intervention=feature_ablation", "seed=7"],
        {"eval/shift/markdown": 1.0, "eval/heldout_accuracy": 0.8})
    report([str(sweep), "--metrics", "eval/shift/markdown", "--against", "intervention=none"])
    table = pd.read_csv(sweep / "report.csv").set_index("job")
    assert table.loc["late", "status"] == "failed" and table.loc["late", "error"] == "RuntimeError: training diverged"
    assert pd.isna(table.loc["late_ablation", "baseline/eval/shift/markdown"])  # no finished none job at seed 7
    summary = (sweep / "report.md").read_text()
    assert "late (RuntimeError: training diverged)" in summary and "failed (no metrics.json)" in summary
    # the none row: the three finished none jobs (n 3, mean shift 7 / 3), not the failed one's 9
    none = [line.replace("|", " ").split() for line in summary.splitlines() if "none" in line.replace("|", " ").split()]
    assert len(none) == 1 and "+2.333" in none[0] and none[0][none[0].index("+2.333") - 1] == "3", none


def heldout(folder, correct, prompts=None, split="heldout"):
    prompts = prompts or [f"Q{i}" for i in range(len(correct))]
    pd.DataFrame({"pair": range(len(correct)), "margin": [1.0 if c else -1.0 for c in correct], "correct": correct,
                  "prompt": prompts, "chosen": "a", "rejected": "b"}).to_csv(folder / f"{split}.csv", index=False)


def test_against_baseline_pairs_the_heldout_accuracy_pair_by_pair(sweep):
    """Where a job and its baseline job wrote heldout.csv for the same pairs, the accuracy change is
    paired pair by pair, with its standard error, and listed per job."""
    heldout(sweep / "4", [1, 1, 0, 1])  # none, seed 0
    heldout(sweep / "5", [1, 0, 0, 1])  # ablation, seed 0: one pair lost
    heldout(sweep / "0", [1, 1, 1, 1])  # none, seed 2
    heldout(sweep / "1", [1, 1, 1, 0.5])  # ablation, seed 2: one pair tied
    heldout(sweep / "filter", [1, 1, 0, 1], prompts=["other"] * 4)  # other pairs: no pairing
    own = json.loads((sweep / "3" / "metrics.json").read_text())  # ablation, seed 10: an in-run baseline's change
    own.update({"eval/heldout_accuracy_change": -0.3, "eval/heldout_accuracy_change_se": 0.05})
    (sweep / "3" / "metrics.json").write_text(json.dumps(own))
    heldout(sweep / "3", [0, 0, 0, 0])  # (its own change is kept, not paired again)
    heldout(sweep / "2", [1, 1, 1, 1])
    report([str(sweep), "--metrics", "eval/heldout_accuracy", "--against", "intervention=none"])
    table = pd.read_csv(sweep / "report.csv").set_index("job")
    assert table.loc["5", "eval/heldout_accuracy_change"] == -0.25
    assert table.loc["5", "eval/heldout_accuracy_change_se"] == pytest.approx(0.5 / 2)  # sd of (0, -1, 0, 0) / sqrt 4
    assert table.loc["1", "eval/heldout_accuracy_change"] == -0.125
    assert table.loc["3", "eval/heldout_accuracy_change"] == -0.3 and table.loc["3", "eval/heldout_accuracy_change_se"] == 0.05
    assert table[["eval/heldout_accuracy_change"]].loc[["filter", "2", "4"]].isna().all().all()
    # ablation, in seed order 0, 2, 10
    assert "-0.225 (-0.250 ± 0.250, -0.125 ± 0.125, -0.300 ± 0.050)" in (sweep / "report.md").read_text()


def test_against_baseline_pairs_the_validation_accuracy_apart_from_the_heldout_one(sweep):
    """validation.csv is paired like heldout.csv, into its own column: a job with validation pairs and
    no held-out file gets a validation change and no held-out one."""
    heldout(sweep / "4", [1, 1, 0, 1], split="validation")  # none, seed 0
    heldout(sweep / "5", [0, 1, 0, 1], split="validation")  # ablation, seed 0: one pair lost
    heldout(sweep / "5", [1, 1, 1, 1])  # (a held-out file without its baseline's: no held-out pairing)
    report([str(sweep), "--metrics", "eval/heldout_accuracy", "--against", "intervention=none"])
    table = pd.read_csv(sweep / "report.csv").set_index("job")
    assert table.loc["5", "eval/validation_accuracy_change"] == -0.25
    assert table.loc["5", "eval/validation_accuracy_change_se"] == pytest.approx(0.5 / 2)
    assert "eval/heldout_accuracy_change" not in table.columns
    assert "eval/validation_accuracy_change (per job ± paired s.e.)" in (sweep / "report.md").read_text()


def test_against_needs_a_swept_override_and_a_baseline_job(sweep):
    with pytest.raises(SystemExit, match="KEY=VALUE with KEY a swept override"):
        report([str(sweep), "--against", "trainer=dpo"])
    with pytest.raises(SystemExit, match="no finished job has intervention=nothing"):
        report([str(sweep), "--against", "intervention=nothing"])


def test_jobs_run_on_different_machines_or_versions_are_named(sweep, capsys):
    from anatomy.environment import environment

    # this machine's record, with the fields the test varies fixed (on a GPU machine with AVX-512 too)
    here = {**environment("cpu"), "torch_cpu_capability": "AVX2", "cuda": None}
    for name in ("0", "1", "2"):
        (sweep / name / "environment.json").write_text(json.dumps(here))
    report([str(sweep)])  # the same environment, and jobs without the file (older runs): nothing said
    assert "different machines" not in (sweep / "report.md").read_text() + capsys.readouterr().out
    other = {**here, "torch_cpu_capability": "AVX512", "cuda": "NVIDIA H100",
             "packages": {**here["packages"], "trl": "0.0.1"}}
    (sweep / "3" / "environment.json").write_text(json.dumps(other))
    report([str(sweep)])
    said = capsys.readouterr().out
    for text in (said, (sweep / "report.md").read_text(), (sweep / "report.html").read_text()):
        assert "the jobs ran on different machines, software or code" in text
        lines = {line.split(": ", 1)[0]: set(line.split(": ", 1)[1].split("; ")) for line in re.split("\n|</?p>", text)
                 if ": " in line and "(jobs " in line}  # (report.html: one paragraph each)
        assert lines["torch_cpu_capability"] == {"AVX512 (jobs 3)", "AVX2 (jobs 0, 1, 2)"}
        assert lines["cuda"] == {"NVIDIA H100 (jobs 3)", "null (jobs 0, 1, 2)"}
        assert lines["packages/trl"] == {"0.0.1 (jobs 3)", f"{here['packages']['trl']} (jobs 0, 1, 2)"}
        assert "cpu" not in lines and "packages/torch" not in lines  # only what differs


def test_overrides_read_as_typed_not_as_hydra_escapes_them(tmp_path):
    """Hydra records `select.block=[group:5]` as `select.block=[group\\:5]`; the report shows what was typed."""
    sweep = tmp_path / "sweep"
    job(sweep, "0", ["select.block=[group\\:5]", "seed=0"], {"audit/n_tested": 3.0})
    report([str(sweep)])
    assert pd.read_csv(sweep / "report.csv").loc[0, "override/select.block"] == "[group:5]"


def test_a_validation_shift_gets_a_reduction_with_its_own_standard_error(sweep):
    """`eval/validation_shift/<concept>` (the shift on the validation probes, to choose settings by) is
    a learned shift like `eval/shift`: reduced against the baseline, "n/a" within 2 s.e. of 0, and
    listed by default."""
    for name in ("0", "1", "2", "3", "4", "5"):  # none and ablation at seeds 2, 10, 0
        metrics = json.loads((sweep / name / "metrics.json").read_text())
        (sweep / name / "metrics.json").write_text(json.dumps({
            **metrics, "eval/validation_shift/markdown": metrics["eval/shift/markdown"] / 2,
            "eval/validation_shift_se/markdown": 0.6 if name == "0" else 0.05}))  # seed 2's none: +1.0 ± 0.6
    report([str(sweep), "--against", "intervention=none"])
    summary = (sweep / "report.md").read_text()
    header = next(line for line in summary.splitlines() if "eval/validation_shift/markdown reduction" in line)
    assert "eval/shift/markdown reduction" in header  # both, by default
    assert "86% (75%, 50%, 200%)" in summary  # the probes' shift
    assert "86% (75%, n/a, 200%)" in summary  # the validation probes': half of each, seed 2's within noise


def _validated(sweep, name, overrides, val_shift, val_acc, shift, acc):
    job(sweep, name, overrides, {"eval/validation_shift/markdown": val_shift, "eval/validation_accuracy": val_acc,
                                 "eval/shift/markdown": shift, "eval/heldout_accuracy": acc})


def test_choose_picks_each_arms_setting_on_validation_alone(tmp_path):
    """--choose: among an arm's settings that remove at least --min-reduction of the concept's shift on
    the validation probes, the highest validation accuracy ratio; else the largest reduction. The
    held-out numbers are shown, never read: here the held-out accuracy favours another setting."""
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        _validated(sweep, f"none{seed}", ["intervention=none", f"seed={seed}"], 2.0, 0.80, 2.0, 0.80)
        # threshold 0.5: 100% removed at 0.90x on validation; 1.0: 85% at 0.95x; 1.5: 25% at 1.00x
        _validated(sweep, f"f05_{seed}", ["intervention=data_filtering", "intervention.threshold=0.5", f"seed={seed}"],
                   0.0, 0.72, 0.0, 0.80)  # (held out: 1.00x, the best there; not what is chosen)
        _validated(sweep, f"f10_{seed}", ["intervention=data_filtering", "intervention.threshold=1.0", f"seed={seed}"],
                   0.3, 0.76, 0.4, 0.72)
        _validated(sweep, f"f15_{seed}", ["intervention=data_filtering", "intervention.threshold=1.5", f"seed={seed}"],
                   1.5, 0.80, 1.5, 0.80)
        # reweighting reaches 80% in no setting: the largest reduction (its defaults, 50%) is taken
        _validated(sweep, f"r_{seed}", ["intervention=data_reweighting", f"seed={seed}"], 1.0, 0.78, 1.2, 0.76)
        _validated(sweep, f"r1_{seed}", ["intervention=data_reweighting", "intervention.n_bins=1", f"seed={seed}"],
                   1.4, 0.80, 1.0, 0.80)
    report([str(sweep), "--against", "intervention=none", "--choose", "markdown"])
    chosen = pd.read_csv(sweep / "choice.csv", dtype=str).set_index("intervention")
    assert chosen.index.tolist() == ["data_filtering", "data_reweighting"]  # (none is the baseline)
    assert chosen.iloc[:, :7].values.tolist() == [
        ["intervention.threshold=1.0", "2", "85%", "0.95", "80%", "0.90", "yes"],
        ["defaults", "2", "50%", "0.97", "40%", "0.95", "no: the largest reduction"]]
    tried = chosen.loc["data_filtering", "settings (validation reduction, accuracy ratio)"]
    assert "intervention.threshold=0.5: 100%, 0.90" in tried and "intervention.threshold=1.5: 25%, 1.00" in tried
    assert "intervention.threshold=1.0" in (sweep / "choice.md").read_text()
    report([str(sweep), "--against", "intervention=none", "--choose", "markdown", "--min-reduction", "0.9"])
    chosen = pd.read_csv(sweep / "choice.csv", dtype=str).set_index("intervention")
    assert chosen.loc["data_filtering", "chosen"] == "intervention.threshold=0.5"


def test_choose_cross_fitted_scores_all_pairs_only_where_both_halves_choose_alike(tmp_path):
    """--cross-fit: the rule on the held-out half too. Filtering's halves both choose threshold 1.0, so
    its accuracy on all the pairs (each job's two halves pooled by their pair counts) is reported;
    reweighting's choose differently, so it has none."""
    sweep = tmp_path / "sweep"
    counts = {"data/heldout": 100.0, "data/validation": 300.0}
    for seed in (0, 1):
        def validated(name, overrides, val_shift, val_acc, shift, acc):
            job(sweep, f"{name}_{seed}", [*overrides, f"seed={seed}"],
                {"eval/validation_shift/markdown": val_shift, "eval/validation_accuracy": val_acc,
                 "eval/shift/markdown": shift, "eval/heldout_accuracy": acc, **counts})
        validated("none", ["intervention=none"], 2.0, 0.80, 2.0, 0.80)
        # threshold 1.0 reaches 80% on both halves with the best accuracy there; 0.5 too, with less
        validated("f05", ["intervention=data_filtering", "intervention.threshold=0.5"], 0.0, 0.70, 0.0, 0.70)
        validated("f10", ["intervention=data_filtering", "intervention.threshold=1.0"], 0.2, 0.76, 0.3, 0.72)
        # reweighting: validation picks n_bins=1 (0.79), held-out its defaults (0.78 against 0.60)
        validated("r", ["intervention=data_reweighting"], 0.3, 0.70, 0.3, 0.78)
        validated("r1", ["intervention=data_reweighting", "intervention.n_bins=1"], 0.3, 0.79, 0.3, 0.60)
    report([str(sweep), "--against", "intervention=none", "--choose", "markdown", "--cross-fit"])
    chosen = pd.read_csv(sweep / "choice.csv", dtype=str).set_index("intervention")
    assert chosen.loc["data_filtering", "chosen"] == chosen.loc["data_filtering", "chosen on held-out"] == \
        "intervention.threshold=1.0"
    pooled = (0.72 * 100 + 0.76 * 300) / 400 / 0.80  # 0.9375, against 0.95 on validation and 0.90 held out
    assert chosen.loc["data_filtering", "cross-fitted accuracy ratio (all pairs)"] == f"{pooled:.3f}"
    assert chosen.loc["data_reweighting", "chosen"] == "intervention.n_bins=1"
    assert chosen.loc["data_reweighting", "chosen on held-out"] == "defaults"
    assert chosen.loc["data_reweighting", "cross-fitted accuracy ratio (all pairs)"] == "n/a: the halves choose differently"
    assert "cross-fitted" in (sweep / "choice.md").read_text()
    assert pd.isna(chosen.loc["data_filtering", "cross-fitted accuracy change (per job ± paired s.e.)"])  # no CSVs
    # With each job's heldout.csv and validation.csv (100 and 300 pairs, as counted), the paired change
    # on all 400 pairs, per seed: the mean over every pair, and the s.e. of the halves' weighted mean.
    expected = []
    for seed, (lost_h, lost_v) in enumerate([(4, 24), (10, 6)]):
        for name, lost in (("none", (0, 0)), ("f10", (lost_h, lost_v)), ("f05", (0, 0)), ("r", (0, 0)), ("r1", (0, 0))):
            heldout(sweep / f"{name}_{seed}", [0] * lost[0] + [1] * (100 - lost[0]))
            heldout(sweep / f"{name}_{seed}", [0] * lost[1] + [1] * (300 - lost[1]), split="validation")
        d_h, d_v = -np.array([1] * lost_h + [0] * (100 - lost_h)), -np.array([1] * lost_v + [0] * (300 - lost_v))
        se = np.sqrt((100 * d_h.std(ddof=1) / 10) ** 2 + (300 * d_v.std(ddof=1) / np.sqrt(300)) ** 2) / 400
        expected.append((np.concatenate([d_h, d_v]).mean(), se))
    report([str(sweep), "--against", "intervention=none", "--choose", "markdown", "--cross-fit"])
    chosen = pd.read_csv(sweep / "choice.csv", dtype=str).set_index("intervention")
    assert [v for v, _ in expected] == [-0.07, -0.04]
    assert chosen.loc["data_filtering", "cross-fitted accuracy change (per job ± paired s.e.)"] == (
        f"-0.055 ({expected[0][0]:+.3f} ± {expected[0][1]:.3f}, {expected[1][0]:+.3f} ± {expected[1][1]:.3f})")
    assert chosen.loc["data_reweighting", "cross-fitted accuracy change (per job ± paired s.e.)"] == \
        "n/a: the halves choose differently"
    report([str(sweep), "--against", "intervention=none", "--choose", "markdown"])  # without: no such columns
    assert "chosen on held-out" not in pd.read_csv(sweep / "choice.csv").columns
    with pytest.raises(SystemExit):
        report([str(sweep), "--against", "intervention=none", "--cross-fit"])  # (argparse: needs --choose)


def test_choose_needs_validation_numbers_and_a_baseline(sweep, tmp_path):
    with pytest.raises(SystemExit, match="eval/validation_shift/markdown.*data.validation_fraction"):
        report([str(sweep), "--against", "intervention=none", "--choose", "markdown"])
    validated_only = tmp_path / "validated_only"  # validation numbers, but no probes of markdown held out
    for name, overrides in (("0", ["intervention=none", "seed=0"]), ("1", ["intervention=data_filtering", "seed=0"])):
        job(validated_only, name, overrides, {"eval/validation_shift/markdown": 1.0, "eval/validation_accuracy": 0.8,
                                              "eval/heldout_accuracy": 0.8})
    with pytest.raises(SystemExit, match=r"no job has eval/shift/markdown with a baseline job \(intervention=none\); "
                                         "the choice is reported on held-out pairs and on probes of markdown"):
        report([str(validated_only), "--against", "intervention=none", "--choose", "markdown"])
    with pytest.raises(SystemExit):
        report([str(sweep), "--choose", "markdown"])  # (argparse: --choose needs --against)


def test_choose_takes_no_reduction_against_a_baseline_within_noise_of_zero(tmp_path):
    """A baseline validation shift within 2 standard errors of 0 makes every reduction noise: the arm
    gets "n/a", not the setting whose noise happened to look best."""
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        job(sweep, f"none{seed}", ["intervention=none", f"seed={seed}"],
            {"eval/validation_shift/markdown": 0.1, "eval/validation_shift_se/markdown": 0.2,
             "eval/validation_accuracy": 0.8, "eval/shift/markdown": 2.0, "eval/heldout_accuracy": 0.8})
        for threshold, shift in ((0.5, 0.0), (1.0, -0.5)):
            overrides = ["intervention=data_filtering", f"intervention.threshold={threshold}", f"seed={seed}"]
            _validated(sweep, f"f{threshold}_{seed}", overrides, shift, 0.78, 0.5, 0.78)
    report([str(sweep), "--against", "intervention=none", "--choose", "markdown"])
    chosen = pd.read_csv(sweep / "choice.csv", dtype=str, keep_default_na=False).set_index("intervention")
    assert chosen.loc["data_filtering", "chosen"] == "n/a"
    assert "within noise of 0" in chosen.loc["data_filtering", "reached the reduction"]
    tried = chosen.loc["data_filtering", "settings (validation reduction, accuracy ratio)"]
    assert "intervention.threshold=1.0: n/a, 0.97" in tried
