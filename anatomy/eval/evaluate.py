"""What the model learned, as numbers.

- On target: held-out preference accuracy. Where pairs record their concepts (synthetic data), also
  `heldout_accuracy_same/<concept>`: the accuracy on the held-out pairs whose two responses both
  carry the concept or both lack it, where that concept cannot be a shortcut: the yardstick for
  what blocking it costs on everything else (with `heldout_n_same/<concept>`, the pairs counted).
  DPO: the implicit reward margin
  [log pi(c) - log ref(c)] - [log pi(r) - log ref(r)] > 0 (before training every margin is 0:
  ties count one half, so `heldout_accuracy_before` is 0.5); also the plain log-prob accuracy
  log pi(c) > log pi(r), before and after. Reward model: reward(c) > reward(r), after and before
  training (the untrained head).
  Held-out responses are scored complete, ended by the end-of-sequence token as the trainers end
  them, so the margin is the implicit reward DPO was trained on.
- Per concept: the learned shift. On probe pairs that differ only in the concept, the change of
  the trained model's margin (with - without the concept) relative to the starting model, averaged
  (log-probs for DPO, rewards for a reward model). Positive: the model learned to prefer it.
  For DPO the two sides are scored as continuations of the prompt, without the end token: a
  probe's sides share a base and one goes on with the concept, so with the end token the margin
  would also count the change in how likely the model is to *stop* after the base, a length
  preference that every appended concept shares (in the default study it is most of the complete-
  response margin). That version is reported too, as `shift_complete/<concept>`. A reward model
  scores complete responses only (its reward is read at the end token). One pass gives both DPO
  measures: the continuation's log-prob is the complete one less the end token's.
  DPO also reports `shift_onset/<concept>`: the part of `shift` at the first token where a probe's
  two sides differ. For an appended concept it is how much more likely the model became to *start*
  the concept right after the base; `shift` - `shift_onset` is the change in how it goes on once
  started. And `shift_continue/<concept>`: the change in how likely the model is to go on at all,
  rather than stop, where the probe's side without the concept ends, log(1 - p(end token)). For an
  appended concept it is the part of `shift` that every concept appended there shares (a model that
  learned to stop less often after the answer is more likely to write whatever comes next);
  `shift` - `shift_continue` is the change of the concept's log-prob given that the model goes on:
  what is the concept's own.
- Next to each shift, the audit's prediction for that concept (the mean signed effect of its
  significant hypotheses), and their correlation across concepts.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anatomy.data.files import read_rows
from anatomy.data.schema import PreferencePair, Probe, concept_sides
from anatomy.errors import AnatomyError
from anatomy.eval.accuracy import correct, mean_change
from anatomy.eval.scoring import ends, first_difference, response_logps, score, stop_logp
from anatomy.models.base import responses_cut

log = logging.getLogger(__name__)


# Anthropic's model-written evaluations (github.com/anthropics/evals: persona/, sycophancy/, ...):
# one behaviour per file, scored in the dialogue format HH-RLHF uses (the upstream template).
EVALS_FIELDS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
EVALS_PROMPT = "\n\nHuman: {question}\n\nAssistant:"


def load_probes(path: str) -> list[Probe]:
    """Probe pairs from a JSON Lines file: rows of {concept, prompt, positive, negative}, or rows of
    Anthropic's model-written evaluations ({question, answer_matching_behavior,
    answer_not_matching_behavior}), whose concept is the file's name (`narcissism.jsonl` ->
    narcissism) and whose positive side is the answer matching the behaviour."""
    return _read_probes(path)[0]


def _read_probes(path: str, option: str = "eval.probes") -> tuple[list[Probe], bool]:
    """`load_probes`, and whether any row was a model-written evaluation (named after the file);
    errors name `option`, the config key that gave the file."""
    rows = read_rows(path, option=option)
    behaviour = behaviour_name(path)
    probes, named_after_file = [], False
    for i, row in enumerate(rows):
        if "concept" not in row and all(k in row for k in EVALS_FIELDS):
            if not all(isinstance(row[k], str) and row[k] for k in EVALS_FIELDS):
                raise AnatomyError(f"{option}={path!r}: row {i} has an empty or non-string field")
            probes.append(Probe(behaviour, EVALS_PROMPT.format(question=row["question"]),
                                row["answer_matching_behavior"], row["answer_not_matching_behavior"]))
            named_after_file = True
            continue
        missing = [k for k in ("concept", "prompt", "positive", "negative") if k not in row]
        if missing:
            raise AnatomyError(f"{option}={path!r}: row {i} lacks {missing} (or, for a model-written "
                               f"evaluation, {list(EVALS_FIELDS)})")
        if not all(isinstance(row[k], str) and row[k] for k in ("concept", "positive", "negative")):
            raise AnatomyError(f"{option}={path!r}: row {i} has an empty or non-string field")
        if row["prompt"] is not None and not isinstance(row["prompt"], str):
            raise AnatomyError(f"{option}={path!r}: row {i}: prompt is not a string")
        if row["positive"] == row["negative"]:
            raise AnatomyError(f"{option}={path!r}: row {i}: positive and negative are the same text, so they "
                               "differ in no concept (its shift would be 0 whatever the model learned)")
        probes.append(Probe(row["concept"], row["prompt"] or "", row["positive"], row["negative"]))
    return probes, named_after_file


def probe_files(files: list[str], option: str = "eval.probes") -> list[Probe]:
    """The probes of several files, refusing a file listed twice and two model-written evaluations
    that would be named alike (`persona/x.jsonl` and `other/x.jsonl` would silently merge into one
    concept `x`, and its shift would average two behaviours)."""
    probes, seen, named = [], {}, {}
    for f in files:
        key = Path(f).resolve()
        if key in seen:
            raise AnatomyError(f"{option} lists {seen[key]!r} twice (as {f!r}): its probes would count twice")
        seen[key] = f
        read, named_after_file = _read_probes(f, option)
        if named_after_file:
            behaviour = behaviour_name(f)
            if behaviour in named:
                raise AnatomyError(
                    f"{option}: {named[behaviour]!r} and {f!r} are model-written evaluations of the same "
                    f"name, so both would be the concept {behaviour!r} and their probes would merge; "
                    "copy one to a file of another name")
            named[behaviour] = f
        probes += read
    return probes


def behaviour_name(path: str) -> str:
    """A model-written evaluation's behaviour: its file's name without `.gz` and the format's suffix
    (`persona/narcissism.jsonl.gz` -> narcissism, `believes-AI-is-v1.1.jsonl` -> believes-AI-is-v1.1)."""
    name = Path(path).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def predictions(table: pd.DataFrame, concepts: list[str]) -> dict[str, float]:
    """The audit's effect per concept: mean signed effect of the significant hypotheses naming it
    (the `concept` column on synthetic data, where a feature that tracks the concept's alternative,
    such as complying for refusal, counts with its sign flipped (`concept_sign`); otherwise the
    concept's name among the top tokens)."""
    sig = table[table["significant"]]
    out = {}
    for concept in concepts:
        if "concept" in sig.columns and (sig["concept"] == concept).any():
            rows = sig[sig["concept"] == concept]
            sign = rows["concept_sign"].fillna(1.0) if "concept_sign" in rows.columns else 1.0
            out[concept] = float((rows["effect"] * sign).mean())
            continue
        rows = sig[sig["top_tokens"].astype(str).str.lower().str.split("|").map(lambda t: concept.lower() in t)]
        if len(rows):
            out[concept] = float(rows["effect"].mean())
    return out


@dataclass
class Evaluate:
    """Held-out accuracy and per-concept learned shifts."""

    probes: str | list[str] | None = None  # JSON Lines file(s) of probe pairs (load_probes); null = the data's own
    validation_probes: str | list[str] | None = None  # probe file(s) for eval/validation_shift/*; null = the data's own
    compare_baseline: bool = True  # also train without intervention and report the shift it removed
    max_length: int = 256  # tokens per prompt + response when scoring
    batch_size: int = 64  # texts per scoring batch

    def probe_set(self, data) -> list[Probe]:
        """The probes (read and checked before any model is built); none -> no shifts, with a warning."""
        files = [self.probes] if isinstance(self.probes, str) else list(self.probes or [])
        probes = probe_files(files) if files else data.probes
        if not probes:
            log.warning("eval: the data source has no probe pairs and eval.probes is not set: "
                        "no per-concept shifts will be measured")
        return probes

    def validation_probe_set(self, data) -> list[Probe]:
        """The probes that measure the shifts on validation (`eval/validation_shift/<concept>`), apart from
        `probe_set`'s, so that settings chosen by them never read the probes of the final numbers: the
        `validation_probes` files, or else the data's own (synthetic data, with `data.validation_fraction`;
        none when `probes` names files, whose concepts the data's own would not match)."""
        given = self.validation_probes
        files = [given] if isinstance(given, str) else list(given or [])
        if files:
            return probe_files(files, option="eval.validation_probes")
        return [] if self.probes else list(data.validation_probes)

    def count_cut(self, tokenizer, heldout: list[PreferencePair], probes: list[Probe]) -> dict[str, float]:
        """`eval/responses_cut`: the held-out and probe responses longer than `max_length`, which are
        scored on their first tokens only (warned about). Counted once, before any training."""
        texts = [(p.prompt, r) for p in heldout for r in (p.chosen, p.rejected)]
        texts += [(p.prompt, r) for p in probes for r in (p.positive, p.negative)]
        cut = responses_cut(tokenizer, texts, self.max_length, eos=True)
        if cut:
            log.warning("eval: %d of %d held-out and probe responses are longer than eval.max_length=%d and will be "
                        "scored on their first tokens only; raise eval.max_length", cut, len(texts), self.max_length)
        return {"eval/responses_cut": float(cut)}

    def run(self, trained, heldout: list[PreferencePair], probes: list[Probe], table: pd.DataFrame,
            prefix: str = "eval") -> tuple[dict[str, float], np.ndarray]:
        """`measure`, then `compare` with the audit's predictions. -> (metrics, held-out margins)"""
        metrics, heldout_margins = self.measure(trained, heldout, probes, prefix)
        return {**metrics, **self.compare(metrics, table, prefix)}, heldout_margins

    def _margins(self, trained, model, a, b) -> np.ndarray:
        """`model`'s score of each text of `a` less that of `b` (log-probs for DPO, rewards for a reward model)."""
        return (score(model, trained.tokenizer, a, trained.kind, self.max_length, self.batch_size)
                - score(model, trained.tokenizer, b, trained.kind, self.max_length, self.batch_size))

    def accuracy(self, trained, pairs: list[PreferencePair], split: str = "heldout",
                 prefix: str = "eval") -> tuple[dict[str, float], np.ndarray]:
        """Preference accuracy on `pairs`, after and before training, as `<prefix>/<split>_accuracy`
        and so on (`split`: heldout, or validation). -> (metrics, each pair's margin; none without pairs)"""
        if not pairs:
            return {}, np.zeros(0)
        metrics: dict[str, float] = {}
        chosen = [(p.prompt, p.chosen) for p in pairs]
        rejected = [(p.prompt, p.rejected) for p in pairs]
        after, before = self._margins(trained, trained.policy, chosen, rejected), self._margins(
            trained, trained.reference, chosen, rejected)
        reward = after - before if trained.kind == "dpo" else after
        for concept, same in _same_concept(pairs).items():
            metrics[f"{prefix}/{split}_accuracy_same/{concept}"] = _accuracy(reward[same])
            metrics[f"{prefix}/{split}_n_same/{concept}"] = float(same.sum())
        if trained.kind == "dpo":
            metrics[f"{prefix}/{split}_accuracy"] = _accuracy(reward)
            metrics[f"{prefix}/{split}_accuracy_before"] = _accuracy(np.zeros_like(reward))
            metrics[f"{prefix}/{split}_logprob_accuracy"] = _accuracy(after)
            metrics[f"{prefix}/{split}_logprob_accuracy_before"] = _accuracy(before)
        else:
            metrics[f"{prefix}/{split}_accuracy"] = _accuracy(after)
            metrics[f"{prefix}/{split}_accuracy_before"] = _accuracy(before)
        return metrics, reward

    def measure(self, trained, heldout: list[PreferencePair], probes: list[Probe],
                prefix: str = "eval") -> tuple[dict[str, float], np.ndarray]:
        """What the trained model learned: held-out accuracy and per-concept shifts (needs no audit).
        -> (metrics, each held-out pair's margin: the implicit reward's chosen - rejected for DPO, the
        reward's for a reward model; > 0 is a pair the model gets right)"""
        metrics, reward = self.accuracy(trained, heldout, "heldout", prefix)
        return {**metrics, **self.shifts(trained, probes, prefix)}, reward

    def shifts(self, trained, probes: list[Probe], prefix: str = "eval", split: str = "") -> dict[str, float]:
        """Each probed concept's learned shift (see the module docstring), as `<prefix>/shift/<concept>`
        and so on, with `split` (validation) `<prefix>/<split>_shift/<concept>`; each with its s.e."""
        if not probes:
            return {}
        kind, tok = trained.kind, trained.tokenizer
        metrics: dict[str, float] = {}
        pos = [(p.prompt, p.positive) for p in probes]
        neg = [(p.prompt, p.negative) for p in probes]
        if kind == "dpo":  # continuations for the shift; the complete response and the onset alongside (one pass)
            scored = [response_logps(m, tok, texts, self.max_length, self.batch_size)
                      for m in (trained.policy, trained.reference) for texts in (pos, neg)]
            measures = dpo_shifts(*scored, eos_token_id=tok.eos_token_id)
        else:
            measures = {"shift": self._margins(trained, trained.policy, pos, neg)
                        - self._margins(trained, trained.reference, pos, neg)}
        for name, values in measures.items():
            by_concept: dict[str, list[float]] = defaultdict(list)
            for probe, d in zip(probes, values):
                by_concept[probe.concept].append(float(d))
            name = f"{split}_{name}" if split else name
            for concept, v in by_concept.items():
                metrics[f"{prefix}/{name}/{concept}"] = float(np.mean(v))
                metrics[f"{prefix}/{name}_se/{concept}"] = float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
        return metrics

    @staticmethod
    def compare(measured: dict[str, float], table: pd.DataFrame, prefix: str = "eval") -> dict[str, float]:
        """Next to each measured shift, the audit's prediction, and their correlation across concepts."""
        metrics: dict[str, float] = {}
        shifts = {k.rsplit("/", 1)[-1]: v for k, v in measured.items() if k.startswith(f"{prefix}/shift/")}
        if not shifts:
            return metrics
        predicted = predictions(table, list(shifts))
        for concept, value in predicted.items():
            metrics[f"{prefix}/prediction/{concept}"] = value
        common = sorted(c for c in shifts if c in predicted)  # one order, however the metrics were stored
        if len(common) >= 3:
            metrics[f"{prefix}/prediction_correlation"] = float(
                np.corrcoef([predicted[c] for c in common], [shifts[c] for c in common])[0, 1])
        return metrics


def dpo_shifts(pol_pos, pol_neg, ref_pos, ref_neg, eos_token_id: int) -> dict[str, np.ndarray]:
    """Per probe, from `response_logps` rows of the policy and the reference on its positive and
    negative sides: the change of the complete-response margin (`shift_complete`), of its
    continuation part, without the end tokens (`shift`), of the part of `shift` at the first
    token where the two sides differ (`shift_onset`), and of the log-prob of going on where the
    negative side ends, log(1 - p(end token)) (`shift_continue`; 0 where its end token was cut off)."""
    complete, stopping, onset, going_on = [], [], [], []
    for (ids_p, pol_p), (ids_n, pol_n), (_, ref_p), (_, ref_n) in zip(pol_pos, pol_neg, ref_pos, ref_neg):
        pol_stop_n, ref_stop_n = stop_logp(ids_n, pol_n, eos_token_id), stop_logp(ids_n, ref_n, eos_token_id)
        complete.append((pol_p.sum() - pol_n.sum()) - (ref_p.sum() - ref_n.sum()))
        stopping.append((stop_logp(ids_p, pol_p, eos_token_id) - pol_stop_n)
                        - (stop_logp(ids_p, ref_p, eos_token_id) - ref_stop_n))
        going_on.append(_log1m_exp(pol_stop_n) - _log1m_exp(ref_stop_n) if ends(ids_n, eos_token_id) else 0.0)
        at, value = first_difference(ids_p, ids_n), 0.0
        if at is not None:  # an end token there is stopping, not part of `shift`
            if at < len(ids_p) and ids_p[at] != eos_token_id:
                value += pol_p[at] - ref_p[at]
            if at < len(ids_n) and ids_n[at] != eos_token_id:
                value -= pol_n[at] - ref_n[at]
        onset.append(value)
    complete, stopping = np.array(complete), np.array(stopping)
    return {"shift": complete - stopping, "shift_complete": complete, "shift_onset": np.array(onset),
            "shift_continue": np.array(going_on)}


def _log1m_exp(logp: float) -> float:
    """log(1 - exp(logp)), accurate near 0 and finite for a certain event (logp = 0)."""
    return float(np.log(-np.expm1(min(float(logp), -1e-12))))


def _same_concept(pairs: list[PreferencePair]) -> dict[str, np.ndarray]:
    """Per recorded concept that differs in some pair: the mask of pairs where it does not differ."""
    out = {}
    for name, (in_chosen, in_rejected) in concept_sides(pairs).items():
        same = in_chosen == in_rejected
        if same.any() and not same.all():
            out[name] = same
    return out


def _accuracy(margin: np.ndarray) -> float:
    return float(correct(margin).mean()) if len(margin) else float("nan")


def accuracy_change(margins: np.ndarray, baseline: np.ndarray, prefix: str = "eval",
                    split: str = "heldout") -> dict[str, float]:
    """The accuracy's change against the baseline scored on the same pairs, and its paired standard
    error (of the per-pair change in correctness): `<prefix>/<split>_accuracy_change(_se)`."""
    change, se = mean_change(correct(margins), correct(baseline))
    if np.isnan(change):
        return {}
    return {f"{prefix}/{split}_accuracy_change": change, f"{prefix}/{split}_accuracy_change_se": se}
