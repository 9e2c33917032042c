"""Anthropic HH-RLHF: whole dialogues in `chosen` / `rejected`.

The prompt is the dialogue up to and including the last "\\n\\nAssistant:"; the responses are what
follows it. A row whose chosen and rejected dialogues differ before that turn (5 of 2,312 in the
harmless test split) compares answers to different prompts: it is invalid, like an empty response.
From a local file (`data.path`, e.g. harmless-base/test.jsonl.gz) or from the hub
(`datasets.load_dataset("Anthropic/hh-rlhf", data_dir=..., split=...)`).
"""

from __future__ import annotations

from dataclasses import dataclass

from anatomy.data.files import read_rows
from anatomy.data.local import finish
from anatomy.data.schema import PreferenceData, check_validation_fraction, validate_rows
from anatomy.errors import AnatomyError

MARKER = "\n\nAssistant:"


def split_dialogue(text: str) -> tuple[str, str] | None:
    """(prompt through the last Assistant marker, final response), or None without a marker."""
    if not isinstance(text, str):
        return None
    cut = text.rfind(MARKER)
    if cut < 0:
        return None
    return text[: cut + len(MARKER)], text[cut + len(MARKER):]


@dataclass
class HHRLHFData:
    """HH-RLHF pairs, prompts split off at the last Assistant turn."""

    path: str | None = None  # local .jsonl(.gz) of {chosen, rejected}; null = load from the hub
    hub_name: str = "Anthropic/hh-rlhf"  # hub dataset, when path is null
    data_dir: str = "harmless-base"  # hub subset (harmless-base, helpful-base, ...)
    split: str = "test"  # hub split
    max_pairs: int | None = 1000  # keep at most this many pairs (a seeded sample); None = all
    heldout_fraction: float = 0.2  # fraction of pairs held out, split by prompt
    validation_fraction: float = 0.0  # of all pairs, the part of the held-out ones set apart for validation; 0 = none
    drop_invalid: bool = True  # drop and count rows with an empty final response or whose two dialogues differ
    seed: int = 0  # seeds the sample and the split

    def __post_init__(self):
        if not 0 <= self.heldout_fraction < 1:
            raise AnatomyError(f"data.heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        check_validation_fraction(self.validation_fraction, self.heldout_fraction)

    def _rows(self) -> tuple[list[dict], str]:
        if self.path:
            return read_rows(self.path, "jsonl"), self.path
        from datasets import load_dataset

        source = f"{self.hub_name}/{self.data_dir}:{self.split}"
        try:
            ds = load_dataset(self.hub_name, data_dir=self.data_dir, split=self.split)
        except Exception as err:  # unreachable hub, unknown name / subset / split: all say the same to the user
            raise AnatomyError(f"data: cannot load {source} from the hub ({type(err).__name__}: {err}); "
                               "check data.hub_name, data.data_dir and data.split, or set data.path to a local "
                               ".jsonl(.gz) file") from err
        return list(ds), source

    def load(self) -> PreferenceData:
        raw, source = self._rows()
        rows, problems, mismatched = [], {}, 0
        for i, row in enumerate(raw):
            if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
                raise AnatomyError(f"{source}: row {i} lacks the 'chosen' / 'rejected' fields of HH-RLHF")
            c, r = split_dialogue(row["chosen"]), split_dialogue(row["rejected"])
            if c is None or r is None:
                problems[i] = f"no {MARKER!r} turn in {'chosen' if c is None else 'rejected'}"
            elif c[0] != r[0]:  # the last Assistant turn differs: the two responses answer different dialogues
                problems[i] = "chosen and rejected end in different dialogues (their last Assistant turns differ)"
                mismatched += 1
            prompt, chosen, rejected = ("", "", "") if i in problems else (c[0], c[1], r[1])  # (a problem row: no text)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        pairs, report = validate_rows(rows, source, drop_invalid=self.drop_invalid, known=problems)
        report["data/prompt_mismatch"] = float(mismatched)
        return finish(pairs, report, self.max_pairs, self.heldout_fraction, self.seed, self.validation_fraction)
