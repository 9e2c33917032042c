"""Preference pairs, their validation, the train / held-out split by prompt, and the held-out split's
validation part (`set_aside_validation`).

Every data source yields raw rows (dicts); `validate_rows` turns them into `PreferencePair`s or
raises an `AnatomyError` that names the file, the row and the problem, before any model exists.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace

import numpy as np

from anatomy.errors import AnatomyError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: the prompt, the preferred and the dispreferred response."""

    prompt: str
    chosen: str
    rejected: str
    concepts_chosen: tuple[str, ...] = ()  # ground truth (synthetic data only): concepts in `chosen`
    concepts_rejected: tuple[str, ...] = ()  # ground truth (synthetic data only): concepts in `rejected`


def concept_sides(pairs: list[PreferencePair]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per concept the pairs record (ground truth, synthetic data): the masks of the pairs whose
    chosen and whose rejected response carry it. Empty when no pair records a concept."""
    names = sorted({c for p in pairs for c in (*p.concepts_chosen, *p.concepts_rejected)})
    return {name: (np.array([name in p.concepts_chosen for p in pairs], dtype=bool),
                   np.array([name in p.concepts_rejected for p in pairs], dtype=bool)) for name in names}


@dataclass(frozen=True)
class Concept:
    """A concept planted by the synthetic generator, with the words that name it in evidence."""

    name: str
    kind: str  # "on_target" | "spurious" | "desirable"
    direction: str  # the side it is planted on more often: "chosen" | "rejected"
    rate_chosen: float
    rate_rejected: float
    keywords: tuple[str, ...]  # lower-case words/symbols; evidence naming one of them names the concept
    counter_keywords: tuple[str, ...] = ()  # words of the concept's alternative (e.g. complying vs refusing)


@dataclass(frozen=True)
class Probe:
    """Two responses to one prompt that differ only in one concept (used by the evaluation)."""

    concept: str
    prompt: str
    positive: str  # with the concept
    negative: str  # without it


@dataclass
class PreferenceData:
    """What a data source hands the pipeline."""

    train: list[PreferencePair]
    heldout: list[PreferencePair]
    concepts: list[Concept] = field(default_factory=list)  # empty unless the ground truth is known
    probes: list[Probe] = field(default_factory=list)
    report: dict[str, float] = field(default_factory=dict)  # rows read / dropped, for metrics.json
    background: list[tuple[str, str]] = field(default_factory=list)  # (prompt, response) texts with no preference
    validation: list[PreferencePair] = field(default_factory=list)  # set apart from held-out (`set_aside_validation`)
    validation_probes: list[Probe] = field(default_factory=list)  # drawn apart from `probes`, to choose settings by
    source_heldout: list[PreferencePair] = field(default_factory=list)  # a shift's source pairs held out (`shifted`)

    def texts(self) -> list[tuple[str, str]]:
        """Every (prompt, response) of every split, then the background texts: what a model or SAE is
        fitted to (unsupervised: no preference label is seen)."""
        pairs = self.train + self.heldout + self.validation + self.source_heldout
        return [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs] + self.background


def validate_rows(
    rows: list[dict],
    source: str,
    prompt_key: str | None = "prompt",
    chosen_key: str = "chosen",
    rejected_key: str = "rejected",
    drop_invalid: bool = False,
    known: dict[int, str] | None = None,
) -> tuple[list[PreferencePair], dict[str, float]]:
    """Check every row and build pairs.

    Missing columns are always an error. Empty or non-string responses, and the rows a source
    found wrong itself (`known`: row -> what is wrong), are an error naming the rows, unless
    `drop_invalid` (then they are dropped and counted). Pairs whose chosen equals rejected carry no
    preference: they are dropped and counted. No usable pair left is an error.
    """
    known = known or {}
    if not rows:
        raise AnatomyError(f"{source}: no rows found")
    keys = [k for k in (prompt_key, chosen_key, rejected_key) if k]
    first = rows[0]
    if not isinstance(first, dict):
        raise AnatomyError(f"{source}: row 0 is {type(first).__name__}, expected an object with columns {keys}")
    missing = [k for k in keys if not any(isinstance(row, dict) and k in row for row in rows)]  # in no row at all
    if missing:
        raise AnatomyError(
            f"{source}: missing column(s) {missing}; found {sorted(first)}. "
            "Set data.prompt_key / data.chosen_key / data.rejected_key to the right names."
        )
    pairs: list[PreferencePair] = []
    invalid: list[str] = []
    identical = 0
    for i, row in enumerate(rows):
        if i in known:
            invalid.append(f"row {i}: {known[i]}")
            continue
        if not isinstance(row, dict) or any(k not in row for k in keys):
            invalid.append(f"row {i}: missing one of {keys}")
            continue
        prompt = row[prompt_key] if prompt_key else ""
        prompt = "" if _is_null(prompt) else prompt
        problems = [
            f"{k} is {_describe(row[k])}"
            for k in (chosen_key, rejected_key)
            if not isinstance(row[k], str) or not row[k].strip()
        ]
        if not isinstance(prompt, str):
            problems.append(f"{prompt_key} is {_describe(prompt)}")
        if problems:
            invalid.append(f"row {i}: " + ", ".join(problems))
            continue
        if row[chosen_key] == row[rejected_key]:
            identical += 1
            continue
        pairs.append(PreferencePair(prompt, row[chosen_key], row[rejected_key]))
    if invalid and not drop_invalid:
        raise invalid_rows(source, invalid)
    if not pairs:
        raise AnatomyError(
            f"{source}: no usable pair left of {len(rows)} rows "
            f"({identical} with chosen identical to rejected, {len(invalid)} invalid)"
        )
    run_on = [pair for pair in pairs if runs_on(pair)]
    if run_on:
        example = run_on[0]
        response = example.rejected if example.chosen[0].isspace() else example.chosen  # (the side that runs on)
        log.warning("%s: in %d of %d pairs the prompt ends in a non-space and a response starts with one, so the "
                    "response runs on from the prompt's last word (...%r + %r...): a tokenizer merges tokens across "
                    "the two, and TRL then trains on another context than the one evaluated. End each prompt with "
                    "a separator (a space, a newline, or a marker such as 'Answer:' + ' ')", source, len(run_on),
                    len(pairs), example.prompt[-20:], response[:20])
    report = {
        "data/rows": float(len(rows)),
        "data/dropped_identical": float(identical),
        "data/dropped_invalid": float(len(invalid)),
        "data/prompts_run_on": float(len(run_on)),
    }
    return pairs, report


def runs_on(pair: PreferencePair) -> bool:
    """Whether the prompt's last character and a response's first are both non-space: written one
    after the other, they read as one word."""
    return bool(pair.prompt) and not pair.prompt[-1].isspace() and not (
        pair.chosen[0].isspace() and pair.rejected[0].isspace())


def invalid_rows(source: str, invalid: list[str]) -> AnatomyError:
    """The error for rows that are not usable pairs (`invalid`: "row i: what is wrong", in order)."""
    shown = "; ".join(invalid[:5]) + (f"; ... ({len(invalid)} in all)" if len(invalid) > 5 else "")
    return AnatomyError(f"{source}: {len(invalid)} invalid row(s): {shown}. "
                        "Fix them, or set data.drop_invalid=true to drop and count them.")


def _is_null(value: object) -> bool:
    """JSON's null, or pandas' NaN for a missing cell (Parquet)."""
    return value is None or (isinstance(value, float) and value != value)


def _describe(value: object) -> str:
    if isinstance(value, str):
        return "empty"
    if _is_null(value):
        return "null"
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        return "a conversation (a list of {role, content} messages): give the response's text as a string"
    return f"not a string ({type(value).__name__})"


def prompt_group(pair: PreferencePair, i: int) -> str:
    """What keeps pairs together in a split: their prompt; a pair without one (row `i`) is its own group."""
    return pair.prompt if pair.prompt else f"\0row{i}"


def split_by_prompt(
    pairs: list[PreferencePair], heldout_fraction: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Seeded train / held-out split in which no prompt lands on both sides.

    Pairs with an empty prompt (a file without a prompt column) are each their own group.
    """
    groups: dict[str, list[PreferencePair]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(prompt_group(p, i), []).append(p)
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    target = heldout_fraction * len(pairs)
    train: list[PreferencePair] = []
    heldout: list[PreferencePair] = []
    for name in names:
        (heldout if len(heldout) < target else train).extend(groups[name])
    if heldout_fraction > 0 and (not train or not heldout):
        raise AnatomyError(
            f"cannot split {len(pairs)} pairs ({len(groups)} distinct prompts) into train and held-out "
            f"at heldout_fraction={heldout_fraction}"
        )
    return train, heldout


def check_validation_fraction(validation_fraction: float, heldout_fraction: float) -> None:
    """A data source's `validation_fraction`: a part of the held-out split, so smaller than it."""
    if validation_fraction != 0 and not 0 < validation_fraction < heldout_fraction:
        raise AnatomyError(
            f"data.validation_fraction must be 0 or in (0, data.heldout_fraction={heldout_fraction}): the validation "
            f"pairs are set apart from the held-out ones; got {validation_fraction}")


def set_aside_validation(data: PreferenceData, fraction: float) -> PreferenceData:
    """The held-out split in two: its last prompts, at least `fraction` of all pairs, become the
    validation pairs (where the audit's hypotheses are replicated and settings are chosen), and the
    rest stay held out for the final numbers, which then no decision has looked at. Whole prompts
    move, so no prompt is on both sides. The training pairs stay as they are, and so do the texts a
    model or SAE is fitted to (held-out + validation is the held-out split, in order). 0: unchanged."""
    if fraction <= 0:
        return data
    held, n_all = data.heldout, len(data.train) + len(data.heldout)
    keys = [prompt_group(p, i) for i, p in enumerate(held)]  # (split_by_prompt keeps each group contiguous)
    starts = [i for i in range(len(held)) if i == 0 or keys[i] != keys[i - 1]]
    cut = next((i for i in reversed(starts) if len(held) - i >= fraction * n_all), 0)
    if cut == 0:
        raise AnatomyError(
            f"cannot set apart validation pairs: data.validation_fraction={fraction} of {n_all} pairs would take all "
            f"{len(held)} held-out pairs ({len(starts)} prompts); lower it or raise data.heldout_fraction")
    return replace(data, heldout=held[:cut], validation=held[cut:])
