"""What a run leaves in its folder: hypotheses.csv, hypotheses.md, verdicts.yaml, metrics.json,
heldout.csv (a trained and evaluated run; validation.csv too, with validation pairs),
environment.json, error.txt when it fails (Hydra adds .hydra/; the pipeline writes selection.json
and the trained model/).

Each file is written to a temporary name and renamed, so a failing run never leaves a torn file.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import pandas as pd

from anatomy.eval.accuracy import correct

CSV_COLUMNS = ["feature", "direction", "effect", "auroc", "p_value", "q_value", "significant", "frequency", "top_tokens"]


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def clean_metrics(metrics: dict) -> dict:
    """Numbers only; NaN (e.g. precision with nothing significant) becomes null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in sorted(metrics.items())}


def write_outputs(out_dir: Path, table: pd.DataFrame, details: dict, metrics: dict, header: dict, max_report: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = CSV_COLUMNS + [c for c in table.columns if c not in CSV_COLUMNS]
    atomic_write(out_dir / "hypotheses.csv", table[columns].to_csv(index=False))
    atomic_write(out_dir / "hypotheses.md", render_markdown(table, details, metrics, header, max_report))
    write_verdicts(out_dir, table, header)
    write_metrics(out_dir, metrics)


def escape_unprintable(text: str) -> str:
    """Every character that is not printable (a line break of any kind: \\n, \\r, U+2028, NEL; a
    control character) as its escape, so a token cannot break the line it is written on."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def read_table(path: Path) -> pd.DataFrame:
    """hypotheses.csv as written: a top token such as `None`, `NA` or `null` stays that text, not NaN."""
    table = pd.read_csv(path)
    if "top_tokens" in table.columns:
        table["top_tokens"] = pd.read_csv(path, usecols=["top_tokens"], dtype=str, keep_default_na=False)["top_tokens"]
    return table


def again(metrics: dict) -> str:
    """Which pairs the hypotheses were tested again on: the validation pairs, when the data source set
    some apart, else the held-out ones; from another distribution's pairs (`data.target`), "target"."""
    split = "validation" if metrics.get("audit/replication_on_validation") else "held-out"
    if "data/target_rows" in metrics:
        return "target validation" if split == "validation" else "target"
    return split


def replicated(row) -> str:
    """'yes' / 'no' where the hypothesis was tested again on the held-out pairs, '' where it was not."""
    value = row.get("replicated")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return "yes" if str(value) in ("True", "1", "1.0") else "no"


LENGTH_ONE_SIDED = 0.9  # a share of pairs whose chosen response is longer (or shorter) that length_note flags


def length_note(metrics: dict, control_length: bool) -> str | None:
    """What to know when the chosen response is the longer (or the shorter) one in at least
    LENGTH_ONE_SIDED of the pairs: length alone then separates them, and so does every feature that
    grows with length; regressing length out extrapolates to equal lengths, which few pairs have."""
    shares = {"longer": metrics.get("audit/chosen_longer", 0.0), "shorter": metrics.get("audit/chosen_shorter", 0.0)}
    side, share = max(shares.items(), key=lambda item: item[1])
    if share < LENGTH_ONE_SIDED:
        return None
    said = (f"length: the chosen response is the {side} one in {share:.0%} of the "
            f"{int(metrics['audit/n_pairs'])} pairs, so length alone separates chosen from rejected, and so does "
            "any feature that grows with length; ")
    if control_length:
        return said + ("hypothesis.control_length estimates each effect at equal lengths, which few pairs have: it "
                       "extrapolates, so a length-controlled effect is weak evidence that a hypothesis is not length")
    return said + ("check that a hypothesis is not length before reading it as a concept (hypothesis=length_controlled "
                   "regresses length out, though at this share by extrapolating to equal lengths, which few pairs have)")


def strongest_first(table: pd.DataFrame) -> pd.DataFrame:
    """The significant hypotheses, smallest q first, then largest |effect|: the order of hypotheses.md,
    verdicts.yaml and the summary."""
    sig = table[table["significant"]]
    return sig.assign(strength=sig["effect"].abs()).sort_values(["q_value", "strength"], ascending=[True, False])


def write_verdicts(out_dir: Path, table: pd.DataFrame, header: dict, decided: dict[int, str] | None = None) -> None:
    """verdicts.yaml: a `select.verdicts` file for this audit, to edit and pass back. Every significant
    hypothesis, strongest first as in hypotheses.md, with this run's verdict (`decided`: the features
    its selection blocked or amplified; allow for the rest) and, as a comment, what it is.

    A concept group whose features this run decided alike gets one `group:N:` line, at its strongest
    feature's place, with its features' lines under it commented out (a person edits the group's
    line, or uncomments a feature's to decide it apart); a group decided feature by feature keeps
    its features' own lines."""
    decided = decided or {}
    sig = strongest_first(table)
    rows = {int(f): row for f, row in zip(sig["feature"], sig.to_dict("records"))}
    rows.update({f: table.loc[table["feature"] == f].iloc[0].to_dict() for f in decided if f not in rows})
    group_of = {f: int(row["group"]) for f, row in rows.items() if pd.notna(row.get("group", pd.NA))}
    members: dict[int, list[int]] = {}
    for f, g in group_of.items():
        members.setdefault(g, []).append(f)
    uniform = {g: decided.get(fs[0], "allow") for g, fs in members.items()
               if len({decided.get(f, "allow") for f in fs}) == 1}
    lines = [
        f"# select.verdicts for this audit: {len(sig)} significant hypotheses, strongest first (evidence: hypotheses.md).",
        "# Set each to allow, block or amplify, then train: the same config with a trainer, intervention and eval",
        "# (say trainer=dpo intervention=data_reweighting eval=default) and select.verdicts=<this file>;",
        "# the file overrides select.block / select.amplify for the features it names.",
        "# A `group:N:` line decides every feature of concept group N; its features' lines below it are comments:",
        "# uncomment one to decide that feature apart (a feature's own line overrides its group's).",
        "# Feature ids are those of this SAE; another (another seed, model or machine) numbers its features otherwise:",
        f"#   {header['sae']} at {header['hook']}",
        "# so the file is refused by a run whose SAE differs from the one `sae` names (its decoder, hashed).",
        f'sae: "{header["sae_fingerprint"]}"',
    ]
    lined = {g: sorted(fs) for g, fs in sorted(members.items()) if g in uniform}
    if lined:  # (each `group:N:` line's features, for a run to check its own group N against)
        lines += [
            "# Group numbers are one audit's too (evidence.* and the hypothesis test form the groups): a run refuses a",
            "# group:N line whose group N there has other features than these; delete `N: [...]` to apply it anyway.",
            "groups: {" + ", ".join(f"{g}: [{', '.join(map(str, fs))}]" for g, fs in lined.items()) + "}",
        ]

    def feature_line(feature: int, row: dict) -> str:
        concept = f"; names {row['concept']}" if isinstance(row.get("concept"), str) else ""
        concept = (f"; group {group_of[feature]}" if feature in group_of else "") + concept
        where = header.get("replicated_on", "held-out")
        concept += {"yes": f"; replicated on {where}", "no": f"; NOT replicated on {where}", "": ""}[replicated(row)]
        tokens = escape_unprintable(str(row.get("top_tokens") or ""))  # (a line break would end the comment)
        return (f"{f'{feature}:':<6} {decided.get(feature, 'allow'):<8} # favours {row['direction']}, effect "
                f"{row['effect']:+.2f}, top tokens {tokens}{concept}")

    written: set[int] = set()
    for feature, row in rows.items():
        if feature in written:
            continue
        group = group_of.get(feature)
        if group not in uniform:
            lines.append(feature_line(feature, row))
            continue
        names = members[group]
        lines.append(f"{f'group:{group}:':<10} {uniform[group]:<8} # concept group {group}: {len(names)} "
                     f"feature{'s' if len(names) > 1 else ''}, below")
        lines += [f"# {feature_line(f, rows[f])}" for f in names]  # ("# " off: a line of the mapping again)
        written.update(names)
    atomic_write(out_dir / "verdicts.yaml", "\n".join(lines) + "\n")


def write_margins(out_dir: Path, split: str, pairs: list, margins, baseline=None) -> None:
    """<split>.csv (heldout.csv, validation.csv, source.csv): each pair, its margin under the trained model (> 0:
    it prefers chosen) and whether it is right (1, 0, 0.5 for a tie); with the baseline, the same
    without intervention, so the pairs the intervention changed can be read."""
    if not pairs:
        return
    table = pd.DataFrame({"pair": range(len(pairs)), "margin": margins, "correct": correct(margins)})
    if baseline is not None:
        table["baseline_margin"], table["baseline_correct"] = baseline, correct(baseline)
    for side in ("prompt", "chosen", "rejected"):
        table[side] = [getattr(p, side) for p in pairs]
    atomic_write(out_dir / f"{split}.csv", table.to_csv(index=False))


def write_failure(out_dir: Path, error: BaseException) -> None:
    """error.txt in the failed job's own folder: what failed, and the traceback."""
    import traceback

    out_dir.mkdir(parents=True, exist_ok=True)
    text = f"{type(error).__name__}: {error}\n\n" + "".join(traceback.format_exception(error))
    atomic_write(out_dir / "error.txt", text)


def write_environment(out_dir: Path, device: str | None) -> None:
    """environment.json: what the run ran on (anatomy/environment.py), before any stage starts."""
    from anatomy.environment import environment

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "environment.json", json.dumps(environment(device), indent=2) + "\n")


def write_metrics(out_dir: Path, metrics: dict) -> None:
    atomic_write(out_dir / "metrics.json", json.dumps(clean_metrics(metrics), indent=2) + "\n")


def render_markdown(table: pd.DataFrame, details: dict, metrics: dict, header: dict, max_report: int) -> str:
    sig = strongest_first(table)
    lines = [
        "# Concept hypotheses",
        "",
        f"Data `{header['data']}`, model `{header['model']}`, SAE `{header['sae']}` at `{header['hook']}`, "
        f"{header['pooling']}-pooled. Test: {header['test']}, {header['correction']} at alpha = {header['alpha']}.",
        "",
        f"{int(metrics['audit/n_tested'])} features tested on {int(metrics['audit/n_pairs'])} pairs; "
        f"**{len(sig)} significant** ({int(metrics['audit/n_significant_chosen'])} favour chosen, "
        f"{int(metrics['audit/n_significant_rejected'])} favour rejected).",
        "",
    ]
    note = length_note(metrics, "effect_unadjusted" in table.columns)
    lines += [f"**{note[0].upper()}{note[1:]}.**", ""] if note else []
    lines += [
        "Each hypothesis reads: *responses where this feature is more active are "
        "preferred (direction chosen) or dispreferred (direction rejected)*. "
        "Effect is the standardized paired difference (d_z); AUROC is P(feature higher in chosen).",
        "",
    ]
    if "audit/n_replicated" in metrics:
        lines += [f"**{int(metrics['audit/n_replicated'])} of {len(sig)} replicated** on the "
                  f"{int(metrics['audit/heldout_pairs'])} {again(metrics)} pairs, which they were not found on: the same "
                  f"test, one-sided in the direction found, and correction over the {len(sig)}, q <= {header['alpha']} "
                  f"(`hypothesis.replicate`; the held-out columns of hypotheses.csv). "
                  f"{metrics['audit/heldout_same_side']:.0%} have their held-out effect on the same side: with few "
                  f"{again(metrics)} pairs a weak hypothesis can be real and still lack the power to replicate.", ""]
    if "audit/recall" in metrics:
        lines += [f"Against the planted concepts: recall {metrics['audit/recall']:.2f}, "
                  f"precision {metrics['audit/precision']:.2f}.", ""]
    lines += render_groups(sig, max_report)
    for _, row in sig.head(max_report).iterrows():
        d = details[int(row["feature"])]
        concept = f" — names planted concept **{row['concept']}**" if isinstance(row.get("concept"), str) else ""
        group = f" (group {int(row['group'])})" if pd.notna(row.get("group", pd.NA)) else ""
        lines += [
            f"## Feature {int(row['feature'])}: favours {row['direction']}{group}{concept}",
            "",
            f"effect {row['effect']:+.3f}, AUROC {row['auroc']:.3f}, q {row['q_value']:.2e}, "
            f"active in {row['frequency']:.1%} of responses" + (
                f"; on the {again(metrics)} pairs effect {row['heldout_effect']:+.3f}, q {row['heldout_q']:.2e}: "
                f"{'replicated' if replicated(row) == 'yes' else '**not replicated**'}" if replicated(row) else ""),
            "",
            f"- top tokens: `{row['top_tokens']}`",
            f"- promotes: `{' '.join(d['promoted'])}`",
            "- top snippets:",
        ]
        lines += [f"  - ({s['side']}, pair {s['pair']}, {s['activation']:.2f}) `{s['text']}`" for s in d["snippets"]]
        lines.append("")
    if len(sig) > max_report:
        lines.append(f"... and {len(sig) - max_report} more in hypotheses.csv.")
    return "\n".join(lines) + "\n"


def render_groups(sig: pd.DataFrame, max_report: int) -> list[str]:
    """hypotheses.md's table of concept groups (`evidence.concept_groups`), strongest group first:
    its features, the side they favour, their mean effect and their most shared top tokens."""
    if "group" not in sig.columns or sig["group"].isna().all():
        return []
    lines = [
        "## Concept groups",
        "",
        "Significant features whose chosen - rejected differences move together across pairs "
        "(`evidence.group_corr`), strongest group first: one concept read by several features, to decide "
        "together (the `group` column of hypotheses.csv and the comments in verdicts.yaml).",
        "",
        "| group | features | favours | mean effect | shared top tokens | feature ids |" + (
            " replicated |" if "replicated" in sig.columns else "") + (" names |" if "concept" in sig.columns else ""),
        "| --- | --- | --- | --- | --- | --- |" + (" --- |" if "replicated" in sig.columns else "") + (
            " --- |" if "concept" in sig.columns else ""),
    ]
    groups = concept_group_rows(sig)
    for g in groups[:max_report]:
        shared = " ".join(f"`{t}`" for t in g["tokens"])
        ids = ", ".join(map(str, g["features"][:8])) + (", ..." if len(g["features"]) > 8 else "")
        line = f"| {g['group']} | {len(g['features'])} | {g['favours']} | {g['effect']:+.2f} | {shared} | {ids} |"
        if "replicated" in sig.columns:
            line += f" {g['replicated']} of {len(g['features'])} |"
        if "concept" in sig.columns:
            line += " " + (", ".join(f"{c} {n}" for c, n in g["names"].items()) or "-") + " |"
        lines.append(line)
    if len(groups) > max_report:
        lines.append(f"\n... and {len(groups) - max_report} more groups in hypotheses.csv.")
    return lines + [""]


def concept_group_rows(sig: pd.DataFrame) -> list[dict]:
    """Per concept group of the significant hypotheses `sig` (strongest first), in group order: its
    features, the side they favour, their mean effect, their 6 most shared top tokens and, on
    synthetic data, the planted concepts they name."""
    if "group" not in sig.columns:
        return []
    out = []
    for group, rows in sig.groupby("group", sort=True):
        sides = rows["direction"].value_counts()
        # each member's distinct top tokens, counted; ties in the order the strongest members give them
        tokens = Counter(t for top in rows["top_tokens"].astype(str) for t in dict.fromkeys(top.split("|")))
        out.append({
            "group": int(group), "features": [int(f) for f in rows["feature"]],
            "favours": sides.index[0] if len(sides) == 1 else ", ".join(f"{n} {side}" for side, n in sides.items()),
            "effect": float(rows["effect"].mean()), "tokens": [t for t, _ in tokens.most_common(6)],
            "names": rows["concept"].dropna().value_counts().to_dict() if "concept" in rows.columns else {},
            "replicated": sum(replicated(r) == "yes" for r in rows.to_dict("records")),
        })
    return out


def intervention_lines(metrics: dict) -> list[str]:
    """The summary's lines on what a run that trained selected, what its intervention did and what it
    trained on (none for an audit)."""
    if not any(k.startswith("train/") for k in metrics):
        return []
    out = [""]
    if "select/n_block" in metrics:
        plan = [f"{int(metrics['select/n_block'])} blocked and {int(metrics['select/n_amplify'])} amplified features "
                "(selection.json)"]
        if metrics.get("intervention/n_pairs"):
            plan.append(f"{int(metrics['intervention/n_dropped'])} of {int(metrics['intervention/n_pairs'])} pairs "
                        f"dropped, effective sample size {metrics['intervention/effective_sample_size']:.0f}")
        plan += [f"{k.rsplit('/', 1)[-1]} edited ({v:.0%} of its energy)" for k, v in metrics.items()
                 if k.startswith("intervention/edit_energy/")]
        out.append("intervention: " + "; ".join(plan))
    too_long = int(metrics.get("train/pairs_too_long", 0))
    out.append(f"trained {int(metrics['train/steps'])} steps on {int(metrics['train/pairs'])} pairs"
               + (f" ({too_long} too long for trainer.max_length, left out)" if too_long else ""))
    return out


def accuracy_lines(metrics: dict, shifts: bool) -> list[str]:
    """The summary's held-out accuracy line for a run that evaluated (none for an audit)."""
    if not any(k.startswith("eval/") for k in metrics):
        return []
    out = [] if shifts else ["", "no learned shifts: no probe pairs (eval.probes=FILE, README: Measure)"]
    if "eval/heldout_accuracy" in metrics:
        acc = f"held-out accuracy {metrics['eval/heldout_accuracy']:.3f} (before training {metrics['eval/heldout_accuracy_before']:.3f}"
        if "eval/baseline/heldout_accuracy" in metrics:
            acc += f"; without intervention {metrics['eval/baseline/heldout_accuracy']:.3f}"
        out.append(acc + _change(metrics, "heldout") + ")" + _chance(metrics["eval/heldout_accuracy"],
                                                                     metrics.get("data/heldout")))
    else:
        out.append("held-out accuracy: no held-out pairs (data.heldout_fraction)")
    if "eval/source_accuracy" in metrics:
        out.append(f"source accuracy {metrics['eval/source_accuracy']:.3f} (before training "
                   f"{metrics['eval/source_accuracy_before']:.3f}) on {int(metrics['data/source_heldout'])} held-out "
                   "pairs of the distribution trained on (data.path; the held-out pairs above are data.target's)")
    if "eval/validation_accuracy" in metrics:
        base = metrics.get("eval/baseline/validation_accuracy")
        out.append(f"validation accuracy {metrics['eval/validation_accuracy']:.3f}"
                   + ("" if base is None else f" (without intervention {base:.3f}{_change(metrics, 'validation')})")
                   + f" on {int(metrics['data/validation'])} pairs set apart from the held-out ones (choose settings "
                   "by it, report held-out)")
    shifts_there = sorted((k.rsplit("/", 1)[-1], v) for k, v in metrics.items()
                          if k.startswith("eval/validation_shift/"))
    if shifts_there:
        base = {c: metrics.get(f"eval/baseline/validation_shift/{c}") for c, _ in shifts_there}
        out.append("shift on the validation probes, drawn apart from the probes above (choose settings by it): "
                   + ", ".join(f"{c} {v:+.2f}" + ("" if base[c] is None else f" (without intervention {base[c]:+.2f})")
                               for c, v in shifts_there))
    return out


def _chance(accuracy: float, n_pairs: float | None) -> str:
    """"; within noise of chance, ..." where an accuracy is within 2 standard errors of 0.5 (a coin's,
    on that many pairs): on a small held-out set, or with a model that learned nothing, 0.55 is no
    evidence of anything."""
    if not n_pairs:
        return ""
    half_width = 2 * (0.25 / n_pairs) ** 0.5
    if abs(accuracy - 0.5) > half_width:
        return ""
    return f"; within noise of chance: 0.5 ± {half_width:.3f} (2 s.e.) on {int(n_pairs)} pairs"


def _change(metrics: dict, split: str) -> str:
    """", change -0.075 ± 0.024 paired s.e." for a run measured against its in-run baseline."""
    key = f"eval/{split}_accuracy_change"
    return f", change {metrics[key]:+.3f} ± {metrics[key + '_se']:.3f} paired s.e." if key in metrics else ""


def summary(metrics: dict, table_path: Path, n_show: int = 8) -> str:
    """A one-screen summary for the terminal."""
    table = read_table(table_path)
    sig = strongest_first(table)
    out = [
        "",
        "=" * 78,
        f"anatomy audit: {int(metrics['audit/n_pairs'])} train pairs, {int(metrics['audit/n_tested'])} features tested, "
        f"{int(metrics['audit/n_significant'])} significant"
        + (f" in {int(metrics['audit/n_groups'])} concept groups" if "audit/n_groups" in metrics else ""),
    ]
    note = length_note(metrics, "effect_unadjusted" in table.columns)
    out += [note] if note else []
    if "audit/n_replicated" in metrics:
        out.append(f"replicated on {int(metrics['audit/heldout_pairs'])} {again(metrics)} pairs (not the ones they were found on): "
                   f"{int(metrics['audit/n_replicated'])} of {int(metrics['audit/n_significant'])} "
                   f"({again(metrics)}: the effect there, ! where not replicated)")
    if "audit/recall" in metrics:
        found = [k.split("/")[-1] for k, v in metrics.items() if k.startswith("audit/found/") and v]
        out.append(f"planted concepts: recall {metrics['audit/recall']:.2f}, precision "
                   f"{metrics['audit/precision'] if metrics['audit/precision'] is not None else float('nan'):.2f}; "
                   f"found {', '.join(found)}")
    rep = "replicated" in sig.columns
    where = again(metrics)  # the replication column: the effect on the held-out (or validation) pairs
    out.append(f"{'feature':>8} {'favours':>8} {'effect':>7} {'q':>9}" + (f" {where}" if rep else "") + "  top tokens")
    for _, r in sig.head(n_show).iterrows():
        mark = replicated(r)  # the held-out effect, with ! where it did not replicate
        held = f"{r['heldout_effect']:+.2f}{'!' if mark == 'no' else ''}" if mark else ""
        out.append(f"{int(r['feature']):>8} {r['direction']:>8} {r['effect']:>+7.2f} {r['q_value']:>9.1e}"
                   + (f" {held:>{len(where)}}" if rep else "") + f"  {r['top_tokens']}")
    groups = concept_group_rows(sig)
    if groups:
        out.append(f"{'group':>8} {'features':>8} {'favours':>8} {'effect':>7}  shared top tokens (select.block=[group:N])")
        for g in groups[:5]:
            favours = "mixed" if "," in g["favours"] else g["favours"]  # (the counts per side: hypotheses.md)
            out.append(f"{g['group']:>8} {len(g['features']):>8} {favours:>8} {g['effect']:>+7.2f}  {'|'.join(g['tokens'])}")
    out += intervention_lines(metrics)
    shifts = sorted(k.rsplit("/", 1)[-1] for k in metrics if k.startswith("eval/shift/"))
    if shifts:
        has_base = any(k.startswith("eval/baseline/") for k in metrics)
        out.append("")
        out.append("what the model learned (shift of the log-prob margin with - without each concept), and held-out")
        out.append("accuracy on the pairs where the concept does not differ (so it cannot be a shortcut there);")
        out.append("onset: the part of the shift at the concept's first token (how much more likely it is started)")
        planted = any(k.startswith("intervention/planted_chosen_share/") for k in metrics)
        if planted:
            out.append("in chosen: of the training pairs where the planted concept is on one side only, the share")
            out.append("where it is chosen, in the data -> as trained on (under the intervention's weights):")
        out.append(f"{'concept':>16} {'trained':>9} {'onset':>7}" + (f" {'no intervention':>16} {'reduction':>9}" if has_base else "")
                   + f" {'acc same':>9}" + (f" {'(no interv.)':>12}" if has_base else "") + (f" {'in chosen':>11}" if planted else ""))
        for c in shifts:
            onset = metrics.get(f"eval/shift_onset/{c}")
            row = f"{c:>16} {metrics[f'eval/shift/{c}']:>+9.2f} {'' if onset is None else f'{onset:>+7.2f}':>7}"
            if has_base:
                base, red = metrics.get(f"eval/baseline/shift/{c}"), metrics.get(f"eval/shift_reduction/{c}")
                reduction = ("" if base is None else "n/a") if red is None else f"{red:>9.0%}"  # n/a: no-intervention within 2 s.e. of 0
                row += f" {'' if base is None else f'{base:>+16.2f}':>16} {reduction:>9}"
            same = metrics.get(f"eval/heldout_accuracy_same/{c}")
            row += f" {'' if same is None else f'{same:>9.3f}':>9}"
            base_same = metrics.get(f"eval/baseline/heldout_accuracy_same/{c}")
            if has_base:
                row += f" {'' if base_same is None else f'{base_same:>12.3f}':>12}"
            before, after = metrics.get(f"data/planted_chosen_share/{c}"), metrics.get(f"intervention/planted_chosen_share/{c}")
            if planted and before is not None:
                kept = "n/a" if after is None or math.isnan(after) else f"{after:.2f}"  # none of those pairs kept
                row += f" {f'{before:.2f}->{kept}':>11}"
            out.append(row)
    out += accuracy_lines(metrics, bool(shifts))
    if not any(k.startswith(("train/", "eval/")) for k in metrics) and sig.empty:
        out += ["", "nothing to decide: no hypothesis is significant"]
    elif not any(k.startswith(("train/", "eval/")) for k in metrics):  # an audit only: what to do next
        out += ["", f"to decide: set block / amplify in {table_path.parent / 'verdicts.yaml'}, then train: the same",
                "config with a trainer, intervention and eval (say trainer=dpo intervention=data_reweighting eval=default)",
                "and select.verdicts=<that file> (README, Decide)"
                + ("; or block a whole group: select.block=[group:N]" if groups else "")]
    timing = ", ".join(f"{k[7:-2]} {v:.0f}s" for k, v in metrics.items() if k.startswith("timing/"))
    out += [f"time: {timing}", f"results: {table_path.parent}", "=" * 78]
    return "\n".join(out)
