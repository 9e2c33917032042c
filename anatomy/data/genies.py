"""GENIES (Clymer et al. 2023, "Generalization Analogies", arXiv:2311.07723): one distribution's rows.

    anatomy experiment=audit_genies data.path=DIR/alpaca_short          # its train split
    anatomy data=genies data.path=DIR/alpaca_short/test.json            # one file
    anatomy data=genies data.path=DIR/alpaca_short data.target=DIR/alpaca_long   # a GENIES shift

A row is a `prompt` and its `responses`, a mapping response -> score in which one response scores
highest (the preferred one; upstream, 1.0 against 0.0). It gives one pair per lower-scored response
(`pairs_per_row=all`: 1 or 3 pairs, all with the row's prompt, so a split by prompt keeps them
together), or one of them, drawn with the seed (`pairs_per_row=one`). `data.path` is a distribution's
folder, holding `<split>.json` (upstream's JSON array) or `<split>.jsonl(.gz)`, or one such file.
With `data.target`, a GENIES shift: the pairs of `path` train, and the target's `test` pairs are
the held-out ones (and the validation ones, with `data.validation_fraction`), so held-out accuracy
measures how what was learned on one distribution carries to the other; `data.heldout_fraction`
then holds out that part of `path`'s pairs too, for in-distribution accuracy (`eval/source_accuracy`).
In four distributions (alpaca_short, alpaca_long, alpaca_high_quality, alpaca_low_quality) the
prompt ends at the instruction, where the others end with Alpaca's `\n\n### Response:\n`: written as
is, the response would run on from the prompt's last word, and a tokenizer merges tokens across the
two. `response_marker` is appended to every prompt that ends in a non-space (counted as
`data/prompts_marked`), so those read as the other distributions do.
GENIES is published as files (GitHub `Joshuaclymer/GENIES`), not on the hub: download them first.
"""

from __future__ import annotations

import ast
import json
import random
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

from anatomy.data.files import read_rows
from anatomy.data.local import check_fractions, finish, shifted
from anatomy.data.schema import PreferencePair, invalid_rows, validate_rows
from anatomy.errors import AnatomyError

SPLITS = ("train", "test")
PAIRS_PER_ROW = ("all", "one")


@dataclass
class GeniesData:
    """Pairs from one GENIES distribution: its preferred response against the others."""

    path: str = "???"  # a distribution's folder (holding train / test .json or .jsonl(.gz)), or one such file
    split: str = "train"  # train | test: the file read from a folder (ignored when path is a file)
    target: str | None = None  # a GENIES shift's target: a distribution whose target_split pairs are the held-out ones
    target_split: str = "test"  # the target's file, as split is path's
    pairs_per_row: str = "all"  # all: the preferred response against each other one; one: against one, seeded
    max_pairs: int | None = None  # keep at most this many pairs of path (and of target; a seeded sample); None = all
    heldout_fraction: float | None = None  # of path's pairs, held out by prompt; null = 0.2 (with a target: none)
    validation_fraction: float = 0.0  # of all pairs, the part of the held-out ones set apart for validation; 0 = none
    response_marker: str | None = "\n\n### Response:\n"  # appended to a prompt that ends in a non-space; null = as written
    drop_invalid: bool = False  # drop and count malformed rows (no single top-scored response, ...) instead of failing
    seed: int = 0  # seeds pairs_per_row=one, the sample and the split

    def __post_init__(self):
        for key in ("split", "target_split"):
            if getattr(self, key) not in SPLITS:
                raise AnatomyError(f"data.{key} must be one of {SPLITS}, got {getattr(self, key)!r}")
        if self.pairs_per_row not in PAIRS_PER_ROW:
            raise AnatomyError(f"data.pairs_per_row must be one of {PAIRS_PER_ROW}, got {self.pairs_per_row!r}")
        check_fractions(self.heldout_fraction, self.validation_fraction, self.target)
        if self.max_pairs is not None and self.max_pairs < 2:
            raise AnatomyError(f"data.max_pairs must be >= 2 or null, got {self.max_pairs}")

    def file(self, key: str = "path") -> Path:
        """The file `path` (or `target`) names: itself, or its folder's `split` (`target_split`) file."""
        value, split = (self.path, self.split) if key == "path" else (self.target, self.target_split)
        if value in (None, "", "???"):
            raise AnatomyError(f"data=genies needs a distribution: data.{key}=DIR (e.g. .../genies/alpaca_short)")
        path = Path(value).expanduser()
        if not path.is_dir():
            if not path.is_file():
                raise AnatomyError(f"data.{key}={value!r}: no such folder or file")
            return path
        names = [f"{split}{ext}" for ext in (".json", ".jsonl", ".jsonl.gz", ".json.gz")]
        found = [path / n for n in names if (path / n).is_file()]
        if not found:
            which = "split" if key == "path" else "target_split"
            raise AnatomyError(f"data.{key}={value!r}: a folder without a {split} split (looked for "
                               f"{', '.join(names)}); set data.{which}, or data.{key} to a distribution's folder")
        return found[0]

    def load(self) -> PreferenceData:
        file = self.file()
        target = self.file("target") if self.target is not None else None  # (a wrong target fails before the source reads)
        pairs, report = self.pairs(file)
        if target is None:
            return finish(pairs, report, self.max_pairs, self.heldout_fraction, self.seed, self.validation_fraction)
        return shifted(pairs, report, *self.pairs(target), self.max_pairs, self.seed, self.validation_fraction,
                       self.heldout_fraction)

    def pairs(self, file: Path) -> tuple[list[PreferencePair], dict[str, float]]:
        """The file's rows as pairs (`pairs_per_row`), and the counts of rows read and dropped."""
        raw = read_rows(str(file))
        rng = random.Random(self.seed)
        rows, problems, marked = [], {}, 0
        for i, row in enumerate(raw):
            preferred, others = _ranked(row)
            if preferred is None:
                problems[i] = others  # (what is wrong with the row)
                continue
            others = others if self.pairs_per_row == "all" else [rng.choice(others)]
            prompt = row["prompt"]
            if self.response_marker and prompt and not prompt[-1].isspace():  # (it would run into the response)
                prompt, marked = prompt + self.response_marker, marked + 1
            rows += [{"prompt": prompt, "chosen": preferred, "rejected": other} for other in others]
        if problems and not self.drop_invalid:
            raise invalid_rows(str(file), [f"row {i}: {why}" for i, why in problems.items()])
        if not rows:
            raise AnatomyError(f"{file}: no usable row of {len(raw)} ({len(problems)} invalid)")
        pairs, report = validate_rows(rows, str(file))
        report.update({"data/rows": float(len(raw)), "data/dropped_invalid": float(len(problems)),
                       "data/prompts_marked": float(marked)})
        return pairs, report


def _ranked(row) -> tuple[str | None, list[str] | str]:
    """(the top-scored response, the lower-scored ones), or (None, what is wrong with the row)."""
    if not isinstance(row, dict) or "responses" not in row or "prompt" not in row:
        return None, "lacks GENIES' 'prompt' / 'responses' fields"
    if not isinstance(row["prompt"], str):
        return None, f"'prompt' is not a string ({type(row['prompt']).__name__})"
    responses = row["responses"]
    if isinstance(responses, str):  # (a mapping written as text, JSON or a Python literal)
        try:
            responses = json.loads(responses)
        except ValueError:
            try:
                responses = ast.literal_eval(responses)
            except (ValueError, SyntaxError):
                return None, "'responses' is text that is not a mapping"
    if not isinstance(responses, dict) or len(responses) < 2:
        return None, "'responses' is not a mapping of at least two responses to scores"
    if not all(isinstance(s, Real) and not isinstance(s, bool) and s == s for s in responses.values()):
        return None, "a score in 'responses' is not a number"
    if not all(isinstance(text, str) and text.strip() for text in responses):
        return None, "a response in 'responses' is empty"
    best = max(responses.values())
    top = [text for text, score in responses.items() if score == best]
    if len(top) > 1:
        return None, f"{len(top)} responses share the top score {best}: no single preferred one"
    return top[0], [text for text, score in responses.items() if score < best]
