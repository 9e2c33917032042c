"""A user's preference file: `anatomy data=local data.path=FILE`.

Columns `prompt` (optional), `chosen`, `rejected`; names configurable. JSON Lines, JSON, CSV or
Parquet, gzip allowed. Rows are validated before any model is built (see `schema.validate_rows`).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from anatomy.data.files import FORMATS, read_rows
from anatomy.data.schema import (PreferenceData, check_validation_fraction, set_aside_validation, split_by_prompt,
                                 validate_rows)
from anatomy.errors import AnatomyError

log = logging.getLogger(__name__)


@dataclass
class LocalData:
    """Preference pairs from a local file."""

    path: str = "???"  # the file (required): .jsonl, .json, .csv, .parquet, optionally .gz
    format: str = "auto"  # auto (from the file name) | jsonl | json | csv | parquet
    prompt_key: str | None = "prompt"  # prompt column; absent from the file or null = no prompt
    chosen_key: str = "chosen"  # preferred response column
    rejected_key: str = "rejected"  # dispreferred response column
    max_pairs: int | None = None  # keep at most this many pairs (a seeded sample); None = all
    heldout_fraction: float = 0.2  # fraction of pairs held out, split by prompt
    validation_fraction: float = 0.0  # of all pairs, the part of the held-out ones set apart for validation; 0 = none
    drop_invalid: bool = False  # drop and count empty / non-string rows instead of failing
    seed: int = 0  # seeds the sample and the split

    def __post_init__(self):
        if self.format not in FORMATS:
            raise AnatomyError(f"data.format must be one of {FORMATS}, got {self.format!r}")
        if not 0 <= self.heldout_fraction < 1:
            raise AnatomyError(f"data.heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        check_validation_fraction(self.validation_fraction, self.heldout_fraction)
        if self.max_pairs is not None and self.max_pairs < 2:
            raise AnatomyError(f"data.max_pairs must be >= 2 or null, got {self.max_pairs}")

    def load(self) -> PreferenceData:
        if self.path in (None, "", "???"):
            raise AnatomyError("data=local needs a file: data.path=FILE")
        rows = read_rows(self.path, self.format)
        prompt_key = self.prompt_key
        if prompt_key and not any(isinstance(row, dict) and prompt_key in row for row in rows):
            log.warning("%s: no %r column; treating every prompt as empty", self.path, prompt_key)
            prompt_key = None  # (some rows with it, some without: those without are invalid rows)
        pairs, report = validate_rows(rows, self.path, prompt_key, self.chosen_key, self.rejected_key, self.drop_invalid)
        return finish(pairs, report, self.max_pairs, self.heldout_fraction, self.seed, self.validation_fraction)


def finish(pairs, report, max_pairs, heldout_fraction, seed, validation_fraction=0.0) -> PreferenceData:
    """Seeded subsample, then the split by prompt (and the held-out split's validation part)."""
    pairs = sample(pairs, max_pairs, seed)
    train, heldout = split_by_prompt(pairs, heldout_fraction, seed)
    data = set_aside_validation(PreferenceData(train, heldout), validation_fraction)
    data.report.update({**report, "data/pairs": float(len(pairs)), "data/train": float(len(data.train)),
                        "data/heldout": float(len(data.heldout))})
    return data


def sample(pairs: list, max_pairs: int | None, seed: int) -> list:
    """At most `max_pairs` of the pairs, a seeded sample (all of them, in order, when fewer)."""
    return random.Random(seed).sample(pairs, max_pairs) if max_pairs is not None and len(pairs) > max_pairs else pairs
