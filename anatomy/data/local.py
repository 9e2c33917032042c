"""A user's preference file: `anatomy data=local data.path=FILE`.

Columns `prompt` (optional), `chosen`, `rejected`; names configurable. JSON Lines, JSON, CSV or
Parquet, gzip allowed. Rows are validated before any model is built (see `schema.validate_rows`).
With `data.target=FILE2` (the same columns), a shift: the pairs of `path` train and every pair of
FILE2 is held out, so replication and held-out accuracy say what carries over to the other data;
`data.heldout_fraction` then holds out that part of `path` too (`eval/source_accuracy`).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from anatomy.data.files import FORMATS, read_rows
from anatomy.data.schema import (PreferenceData, PreferencePair, check_validation_fraction, set_aside_validation,
                                 split_by_prompt, validate_rows)
from anatomy.errors import AnatomyError

log = logging.getLogger(__name__)
HELDOUT = 0.2  # data.heldout_fraction when it is null and there is no target


@dataclass
class LocalData:
    """Preference pairs from a local file."""

    path: str = "???"  # the file (required): .jsonl, .json, .csv, .parquet, optionally .gz
    format: str = "auto"  # auto (from the file name) | jsonl | json | csv | parquet
    prompt_key: str | None = "prompt"  # prompt column; absent from the file or null = no prompt
    chosen_key: str = "chosen"  # preferred response column
    rejected_key: str = "rejected"  # dispreferred response column
    max_pairs: int | None = None  # keep at most this many pairs of path (and of target; a seeded sample); None = all
    target: str | None = None  # a second file (same columns) whose pairs are all held out: a shift from path to it
    heldout_fraction: float | None = None  # of path's pairs, held out by prompt; null = 0.2 (with a target: none)
    validation_fraction: float = 0.0  # of all pairs, the part of the held-out ones set apart for validation; 0 = none
    drop_invalid: bool = False  # drop and count empty / non-string rows instead of failing
    seed: int = 0  # seeds the sample and the split

    def __post_init__(self):
        if self.format not in FORMATS:
            raise AnatomyError(f"data.format must be one of {FORMATS}, got {self.format!r}")
        check_fractions(self.heldout_fraction, self.validation_fraction, self.target)
        if self.max_pairs is not None and self.max_pairs < 2:
            raise AnatomyError(f"data.max_pairs must be >= 2 or null, got {self.max_pairs}")

    def load(self) -> PreferenceData:
        for key in ("path", "target") if self.target is not None else ("path",):
            if getattr(self, key) in (None, "", "???"):
                raise AnatomyError(f"data=local needs a file: data.{key}=FILE")
        pairs, report = self.pairs(self.path)
        if self.target is None:
            return finish(pairs, report, self.max_pairs, self.heldout_fraction, self.seed, self.validation_fraction)
        held, held_report = self.pairs(self.target, "data.target")
        return shifted(pairs, report, held, held_report, self.max_pairs, self.seed, self.validation_fraction,
                       self.heldout_fraction)

    def pairs(self, path: str, option: str = "data.path") -> tuple[list[PreferencePair], dict[str, float]]:
        """The file's valid pairs, and the counts of rows read and dropped (`option`: the key naming it)."""
        rows = read_rows(path, self.format, option)
        prompt_key = self.prompt_key
        if prompt_key and not any(isinstance(row, dict) and prompt_key in row for row in rows):
            log.warning("%s: no %r column; treating every prompt as empty", path, prompt_key)
            prompt_key = None  # (some rows with it, some without: those without are invalid rows)
        return validate_rows(rows, path, prompt_key, self.chosen_key, self.rejected_key, self.drop_invalid)


def finish(pairs, report, max_pairs, heldout_fraction, seed, validation_fraction=0.0) -> PreferenceData:
    """Seeded subsample, then the split by prompt (and the held-out split's validation part); a null
    `heldout_fraction` holds out `HELDOUT`."""
    pairs = sample(pairs, max_pairs, seed)
    heldout_fraction = HELDOUT if heldout_fraction is None else heldout_fraction
    train, heldout = split_by_prompt(pairs, heldout_fraction, seed)
    data = set_aside_validation(PreferenceData(train, heldout), validation_fraction)
    data.report.update({**report, "data/pairs": float(len(pairs)), "data/train": float(len(data.train)),
                        "data/heldout": float(len(data.heldout))})
    return data


def shifted(pairs, report, held, held_report, max_pairs, seed, validation_fraction=0.0,
            source_fraction: float | None = None) -> PreferenceData:
    """A shift: the pairs of one source train, every pair of another (the target) is held out.

    Both are seeded samples of at most `max_pairs`; the held-out pairs are ordered by whole prompts,
    seeded, and the last `validation_fraction` of all pairs become the validation ones. With
    `source_fraction`, that part of the source's pairs (split by prompt) is held out too, as
    `source_heldout`: in-distribution accuracy beside the target's. The target's counts are reported
    as `data/target_*`.
    """
    train, held = (sample(p, max_pairs, seed) for p in (pairs, held))
    train, source = split_by_prompt(train, source_fraction, seed) if source_fraction else (train, [])
    held, _ = split_by_prompt(held, 0.0, seed)  # (whole prompts, seeded order: the last become validation)
    data = set_aside_validation(PreferenceData(train, held, source_heldout=source), validation_fraction)
    data.report.update({**report, **{k.replace("data/", "data/target_"): v for k, v in held_report.items()},
                        "data/pairs": float(len(train) + len(source) + len(held)), "data/train": float(len(data.train)),
                        "data/heldout": float(len(data.heldout)), "data/source_heldout": float(len(source))})
    return data


def check_fractions(heldout_fraction: float | None, validation_fraction: float, target: str | None) -> None:
    """heldout_fraction splits the source (null: HELDOUT, or with a target none); with a target, whose
    pairs are the held-out ones, it is the source's part held out for in-distribution accuracy."""
    if heldout_fraction is not None and not 0 <= heldout_fraction < 1:
        raise AnatomyError(f"data.heldout_fraction must be in [0, 1), got {heldout_fraction}")
    if target is not None:
        if not 0 <= validation_fraction < 1:
            raise AnatomyError(f"data.validation_fraction must be in [0, 1), got {validation_fraction}")
        return
    check_validation_fraction(validation_fraction, HELDOUT if heldout_fraction is None else heldout_fraction)


def sample(pairs: list, max_pairs: int | None, seed: int) -> list:
    """At most `max_pairs` of the pairs, a seeded sample (all of them, in order, when fewer)."""
    return random.Random(seed).sample(pairs, max_pairs) if max_pairs is not None and len(pairs) > max_pairs else pairs
