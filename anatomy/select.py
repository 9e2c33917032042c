"""Decide: which concepts to block and which to amplify, from config or a reviewed file.

    select.block=[genius,smart,412]      # strings match a significant hypothesis's top tokens
    select.amplify=[sorry]               # (case-insensitive, whole token); ints are feature ids
    select.block=[group:3]               # every feature of concept group 3 (hypotheses.md)
    select.verdicts=verdicts.yaml        # {feature_id: allow | block | amplify}, edited by a person
                                         # (a `group:3: block` line decides concept group 3's features)
    select.match_top=2                   # strings match only the 2 strongest top tokens (default: all)

The result records every selected feature with the reason it was selected.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from anatomy.errors import AnatomyError

VERDICTS = ("allow", "block", "amplify")
log = logging.getLogger(__name__)


@dataclass
class Selection:
    block: list[int]
    amplify: list[int]
    reasons: dict[int, list[str]]  # feature -> why it was selected
    directions: dict[int, str]  # feature -> "chosen" | "rejected" (its hypothesis's direction)
    unmatched: list[str] = field(default_factory=list)  # strings that selected nothing ("block:word")

    def report(self) -> dict[str, float]:
        return {"select/n_block": float(len(self.block)), "select/n_amplify": float(len(self.amplify))}

    def to_json(self) -> dict:
        return {
            "block": self.block, "amplify": self.amplify, "unmatched": self.unmatched,
            "features": {str(f): {"direction": self.directions.get(f), "reasons": r} for f, r in self.reasons.items()},
        }


@dataclass
class Select:
    """Which features the intervention acts on."""

    block: list[int | str] = field(default_factory=list)  # feature ids (int) or strings matched against top tokens
    amplify: list[int | str] = field(default_factory=list)  # as block, for concepts to strengthen
    verdicts: str | None = None  # YAML file {feature: allow | block | amplify}, applied after block/amplify
    match_top: int = 0  # match strings against each hypothesis's first match_top top tokens only (0 = all)

    def __post_init__(self):
        if self.match_top < 0:
            raise AnatomyError(f"select.match_top must be >= 0 (0 = every top token), got {self.match_top}")
        self.block, self.amplify = list(self.block or []), list(self.amplify or [])
        for item in self.block + self.amplify:
            if not isinstance(item, (int, str)) or isinstance(item, bool):
                raise AnatomyError(f"select: {item!r} is neither a feature id nor a string")

    def check(self) -> None:
        """Read the verdicts file now, so a typo in it fails before the audit, not after."""
        if self.verdicts:
            self._verdicts()  # (parses every line, the group lines too)
            _ = self._written_groups  # (and the groups: line)

    def check_sae(self, fingerprint: str, d_sae: int | None = None) -> None:
        """A verdicts file written by a run (its `sae:` line) applies to that run's SAE only: in another,
        the same ids are other features; and no id, in it or in select.block / amplify, is beyond the
        SAE's `d_sae` features. Checked once the SAE is loaded, before the audit."""
        if d_sae is not None:
            ids = [i for i in self.block + self.amplify if isinstance(i, int)]
            ids += list(self._verdicts()) if self.verdicts else []
            beyond = sorted({i for i in ids if not 0 <= i < d_sae})
            if beyond:
                raise AnatomyError(f"select: feature id(s) {beyond[:5]} are not features of this SAE, which has "
                                   f"{d_sae} (ids 0-{d_sae - 1})")
        written_for = self._verdicts_file.get("sae") if self.verdicts else None
        if written_for is not None and str(written_for) != fingerprint:
            raise AnatomyError(
                f"select.verdicts={self.verdicts} was written for another SAE (its sae: {written_for}; this run's SAE: "
                f"{fingerprint}): feature ids name other features in another SAE (another seed, model or SAE config, "
                "or an SAE trained on another kind of machine). Audit with this config and edit that run's "
                "verdicts.yaml, or delete the file's sae: line to apply its ids anyway")

    @cached_property
    def _verdicts_file(self) -> dict:
        """The file as read once, at `check` (before the audit): the run acts on what was checked."""
        import yaml

        path = Path(self.verdicts)
        if not path.is_file():
            raise AnatomyError(f"select.verdicts={self.verdicts!r}: file does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise AnatomyError(f"select.verdicts={self.verdicts!r}: does not parse as YAML ({err})") from err
        if not isinstance(raw, dict):
            raise AnatomyError(f"select.verdicts={self.verdicts!r}: expected a mapping feature -> verdict")
        return raw

    def _verdicts(self) -> dict[int, str]:
        """feature -> verdict (`_decisions`; its group lines are `_decisions[1]`)."""
        return self._decisions[0]

    @cached_property
    def _decisions(self) -> tuple[dict[int, str], dict[int, str]]:
        """The file's lines as (feature -> verdict, concept group -> verdict); the optional `sae:` line
        (the SAE the file was written for) is neither."""
        features, groups = {}, {}
        for key, verdict in self._verdicts_file.items():
            if key in ("sae", "groups"):
                continue
            group = self._group_id(key)
            name = key if group is not None else f"feature {key}"
            if str(verdict).lower() not in VERDICTS:
                raise AnatomyError(f"select.verdicts: {name}: verdict {verdict!r} is not one of {VERDICTS}")
            if group is not None:
                groups[group] = str(verdict).lower()
                continue
            try:
                features[int(key)] = str(verdict).lower()
            except ValueError:
                raise AnatomyError(f"select.verdicts: {key!r} is not a feature id (nor group:N)") from None
        return features, groups

    @cached_property
    def _written_groups(self) -> dict[int, set[int]]:
        """The optional `groups:` line: each group line's features in the audit that wrote the file."""
        written = self._verdicts_file.get("groups") or {}
        try:
            return {int(g): {int(f) for f in fs} for g, fs in written.items()}
        except (AttributeError, TypeError, ValueError):
            raise AnatomyError(f"select.verdicts: groups: expected {{group: [feature ids]}}, got {written!r}") from None

    @staticmethod
    def _group_id(key) -> int | None:
        group = re.fullmatch(r"group:(\d+)", str(key).strip().lower())
        return int(group[1]) if group else None

    def run(self, table: pd.DataFrame) -> Selection:
        """Resolve ids and strings against the hypotheses table (hypotheses.csv's rows)."""
        tested = {int(f): d for f, d in zip(table["feature"], table["direction"])}
        significant = table[table["significant"]]
        tokens = {int(f): [t.lower() for t in str(top).split("|")][: self.match_top or None] for f, top in
                  zip(significant["feature"], significant["top_tokens"])}
        where = f"first {self.match_top} top tokens" if self.match_top else "top tokens"
        chosen: dict[str, dict[int, list[str]]] = {"block": {}, "amplify": {}}
        unmatched: list[str] = []
        for kind, items in (("block", self.block), ("amplify", self.amplify)):
            for item in items:
                if isinstance(item, int):
                    if item not in tested:
                        raise AnatomyError(f"select.{kind}: feature {item} was not tested (below min_frequency, or out of range)")
                    chosen[kind].setdefault(item, []).append(f"select.{kind} names feature {item}")
                    continue
                group = self._group_id(item)
                if group is not None:
                    for f in group_members(significant, group, f"select.{kind}: '{item}'"):
                        chosen[kind].setdefault(f, []).append(f"select.{kind} '{item}': it is in concept group {group}")
                    continue
                hits = [f for f, toks in tokens.items() if item.lower() in toks]
                if not hits:
                    log.warning("select.%s: '%s' matches no significant hypothesis's %s", kind, item, where)
                    unmatched.append(f"{kind}:{item}")
                for f in hits:
                    chosen[kind].setdefault(f, []).append(f"select.{kind} '{item}' matches its {where}")
        if self.verdicts:
            overridden = []  # features select.block / amplify chose that the file decides otherwise
            decided = {}  # feature -> (verdict, why): its group's line first, then its own line, which wins
            for group, verdict in self._decisions[1].items():  # (group lines)
                members = group_members(significant, group, f"select.verdicts: 'group:{group}'")
                written = self._written_groups.get(group)
                if written is not None and written != set(members):
                    raise AnatomyError(
                        f"select.verdicts: group:{group} was written for features {sorted(written)}, but this "
                        f"audit's concept group {group} is {sorted(members)}: group numbers are one audit's "
                        "(evidence.*, the hypothesis test and the data form the groups). Audit with this config and "
                        f"edit that run's verdicts.yaml, or delete `{group}: [...]` from the file's groups: line "
                        "to apply the line to this audit's group anyway")
                decided.update({f: (verdict, f"{self.verdicts}: group:{group}: {verdict}") for f in members})
            for feature, verdict in self._verdicts().items():
                if feature not in tested:
                    raise AnatomyError(f"select.verdicts: feature {feature} was not tested")
                decided[feature] = (verdict, f"{self.verdicts}: {verdict}")
            for feature, (verdict, why) in decided.items():
                for kind in ("block", "amplify"):
                    if chosen[kind].pop(feature, None) is not None and verdict != kind:
                        overridden.append(f"{feature} ({kind} -> {verdict})")
                if verdict != "allow":
                    chosen[verdict][feature] = [why]
            if overridden:
                log.warning("select.verdicts=%s overrides select.block / select.amplify for %d features it names: "
                            "%s%s. Edit those lines of the file to decide them there", self.verdicts, len(overridden),
                            ", ".join(overridden[:8]), ", ..." if len(overridden) > 8 else "")
        both = set(chosen["block"]) & set(chosen["amplify"])
        if both:
            raise AnatomyError(f"select: features {sorted(both)} are both blocked and amplified")
        if self.verdicts and not chosen["block"] and not chosen["amplify"]:
            raise AnatomyError(
                f"select: nothing selected: select.verdicts={self.verdicts} blocks and amplifies nothing, and overrides "
                "select.block / select.amplify for every feature it names. Set some features to block or amplify "
                "in it, or audit only with trainer=none intervention=none eval=none")
        if (self.block or self.amplify) and not chosen["block"] and not chosen["amplify"]:
            raise AnatomyError(
                f"select: nothing selected: {', '.join(unmatched)} match no significant hypothesis's top tokens. "
                "Read hypotheses.md (already written) and set select.block=[...] for this data, or audit only with "
                "trainer=none intervention=none eval=none")
        reasons = {**chosen["block"], **chosen["amplify"]}
        return Selection(sorted(chosen["block"]), sorted(chosen["amplify"]), reasons,
                         {f: tested[f] for f in reasons}, unmatched)


def group_members(significant: pd.DataFrame, group: int, where: str) -> list[int]:
    """The features of concept group `group` (hypotheses.md), or an error saying `where` named it."""
    if "group" not in significant.columns:
        raise AnatomyError(f"{where} names a concept group, but this run has none (evidence.group_corr=null)")
    members = [int(f) for f in significant.loc[significant["group"] == group, "feature"]]
    if not members:
        raise AnatomyError(f"{where}: there is no concept group {group} (this audit has "
                           f"{significant['group'].nunique()}; see hypotheses.md)")
    return members
