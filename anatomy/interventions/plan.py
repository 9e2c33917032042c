"""One interface for every intervention: a `Plan`.

A plan reshapes what the trainer learns from, in two ways that compose: per-pair `weights` (data
interventions; 0 drops a pair) and activation `edits` at named hook points (feature interventions),
which act on the policy during training only. `report` says what the intervention did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from anatomy.data.schema import concept_sides
from anatomy.errors import AnatomyError
from anatomy.features import Features
from anatomy.models.base import LoadedModel, encode_batch
from anatomy.models.hooks import HookFn, capture, parse_hook
from anatomy.select import Selection

log = logging.getLogger(__name__)


@dataclass
class Plan:
    weights: np.ndarray | None = None  # one per training pair (mean 1 over kept pairs), or None = all 1
    edits: dict[str, HookFn] = field(default_factory=dict)  # hook name -> activation edit, training only
    report: dict[str, float] = field(default_factory=dict)  # intervention/* numbers for metrics.json


class Intervention:
    """What every intervention option is: `check(spec)` before any model is built, then `plan`."""

    def hook_points(self) -> list[str]:
        """The hook points it edits besides the SAE's (checked before the model is built, and against
        its modules once it loads)."""
        return []

    def check(self, spec) -> None:
        """Fail on a config that cannot work with this model (e.g. a hook point it lacks); no I/O."""
        for hook in self.hook_points():
            parse_hook(hook, spec.n_layers)

    def plan(self, selection: Selection, features: Features, sae) -> Plan:
        raise NotImplementedError


def plan_for(intervention: Intervention, selection: Selection, features: Features, sae, fits: np.ndarray) -> Plan:
    """The intervention's plan for the training pairs the trainer will train on (`fits`, a boolean
    mask; the trainer's `fits`): made on those pairs alone, so its weights, their balance and its
    report describe what is trained; the others get weight 0."""
    if fits.all():
        return intervention.plan(selection, features, sae)
    plan = intervention.plan(selection, features.of_pairs(fits), sae)
    weights = np.zeros(len(fits))
    weights[fits] = 1.0 if plan.weights is None else plan.weights
    plan.weights = weights
    return plan


def concept_difference(features: Features, feature_ids: list[int], directions: dict[int, str]) -> np.ndarray:
    """Per pair: how much the selected concept favours chosen, in its hypothesis's direction.

    Each feature's chosen - rejected difference is divided by its standard deviation over pairs and
    signed so that positive means "the pair's preference goes the way the hypothesis says"; the
    selected features are averaged. 0 for every pair when nothing is selected.
    """
    if not feature_ids:
        return np.zeros(features.chosen.shape[0])
    cols = np.asarray(feature_ids)
    diff = (features.chosen[:, cols] - features.rejected[:, cols]).toarray().astype(np.float64)
    sign = np.array([1.0 if directions.get(int(f), "chosen") == "chosen" else -1.0 for f in cols])
    return (_standardized(diff) * sign).mean(axis=1)


def concept_presence(features: Features, feature_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, how strongly the selected concept is present in chosen and in rejected: the mean
    over its features of the pooled activation divided by that feature's standard deviation over
    all responses. -> (chosen scores, rejected scores)"""
    n = features.chosen.shape[0]
    if not feature_ids:
        return np.zeros(n), np.zeros(n)
    cols = np.asarray(feature_ids)
    both = np.vstack([features.chosen[:, cols].toarray(), features.rejected[:, cols].toarray()]).astype(np.float64)
    score = _standardized(both).mean(axis=1)
    return score[:n], score[n:]


def _standardized(x: np.ndarray) -> np.ndarray:
    """Each column divided by its standard deviation over rows (a constant column is left as is)."""
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    return x / scale


def otsu_threshold(values: np.ndarray) -> float:
    """The cut splitting `values` into two groups with the largest between-group variance (Otsu's
    method): the boundary between "absent" and "present" when the scores are bimodal."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if len(v) < 2 or v[0] == v[-1]:
        raise AnatomyError("cannot split the concept's presence scores in two: they are all equal")
    k = np.arange(1, len(v))  # cut after the k smallest values
    csum = np.cumsum(v)
    low, high = csum[:-1] / k, (csum[-1] - csum[:-1]) / (len(v) - k)
    between = k * (len(v) - k) * (low - high) ** 2
    between[v[1:] == v[:-1]] = -1.0  # a cut must fall between distinct values
    best = int(np.argmax(between))
    return float((v[best] + v[best + 1]) / 2)


def mixed_direction(feature_ids: list[int], signs: list[float], features: Features, w_dec: torch.Tensor
                    ) -> tuple[torch.Tensor, float]:
    """One direction for several features: unit(sum_f s_f * a_f * u_f), where u_f is feature f's unit
    decoder direction and a_f its typical strength (mean pooled activation over the responses where
    it is active), and the mean of the a_f. -> (unit direction, typical activation)"""
    chosen, rejected = features.chosen.tocsc(), features.rejected.tocsc()
    mix = torch.zeros(w_dec.shape[1], device=w_dec.device)  # (on the SAE's device: a GPU's, too)
    strengths = []
    for f, sign in zip(feature_ids, signs):
        active = np.concatenate([chosen[:, [f]].data, rejected[:, [f]].data])
        strength = float(active.mean()) if len(active) else 1.0
        strengths.append(strength)
        u = w_dec[f].float()
        mix += sign * strength * u / u.norm()
    if mix.norm() == 0:
        raise AnatomyError("the selected features' directions cancel out (a zero direction)")
    return mix / mix.norm(), float(np.mean(strengths))


LARGE_EDIT = 0.5  # an edit changing more than this share of the activations' energy is warned about


@torch.no_grad()
def edit_energy(model: LoadedModel, edits: dict[str, HookFn], pairs, n_pairs: int = 64, batch_size: int = 16,
                max_length: int = 256) -> dict[str, float]:
    """How large each activation edit is, measured on the starting model before training.

    Per hook point, `intervention/edit_energy/<hook>` is the squared norm of what the edit changes,
    summed over every token (prompt and response, padding left out) of the first `n_pairs` training
    pairs, both sides, divided by the activations' own squared norm there. Each edit is measured
    alone, on the unedited model. An ablation removing 0.8 of the energy takes most of the residual
    stream away, not one concept: it also removes whatever else lives in those directions, and is
    warned about (above LARGE_EDIT)."""
    texts = [side for pair in pairs[:n_pairs] for side in ((pair.prompt, pair.chosen), (pair.prompt, pair.rejected))]
    device = next(model.model.parameters()).device
    changed, total = dict.fromkeys(edits, 0.0), dict.fromkeys(edits, 0.0)
    for start in range(0, len(texts), batch_size):  # each batch tokenized once, for every hook
        input_ids, mask, _, _ = encode_batch(model.tokenizer, texts[start:start + batch_size], max_length)
        input_ids, mask = input_ids.to(device), mask.to(device)
        keep = mask.bool()  # padding left out
        for hook, fn in edits.items():
            act = capture(model.model, hook, input_ids, mask).float()
            new = fn(act.clone())  # (a copy: an edit may work in place)
            delta = torch.zeros_like(act) if new is None else new.float() - act
            changed[hook] += float(delta[keep].pow(2).sum())
            total[hook] += float(act[keep].pow(2).sum())
    out = {}
    for hook in edits:
        share = changed[hook] / total[hook] if total[hook] > 0 else 0.0
        out[f"intervention/edit_energy/{hook}"] = share
        if share > LARGE_EDIT:
            log.warning("intervention: the edit at %s changes %.0f%% of the activations' energy (squared norm) on the "
                        "training texts, likely much more than the selected concept; to change less, select fewer "
                        "features (select.match_top), ablate one direction (intervention.mixed=true) or steer with a "
                        "smaller intervention.coefficient", hook, 100 * share)
    return out


def weight_report(prefix: str, weights: np.ndarray) -> dict[str, float]:
    kept = weights[weights > 0]
    ess = float(kept.sum() ** 2 / (kept ** 2).sum()) if len(kept) else 0.0
    return {
        f"{prefix}/n_pairs": float(len(weights)),
        f"{prefix}/n_dropped": float((weights == 0).sum()),
        f"{prefix}/weight_min": float(kept.min()) if len(kept) else 0.0,
        f"{prefix}/weight_max": float(kept.max()) if len(kept) else 0.0,
        f"{prefix}/effective_sample_size": ess,
        f"{prefix}/effective_sample_fraction": ess / len(weights) if len(weights) else 0.0,
    }


def planted_balance(pairs, weights: np.ndarray | None) -> dict[str, float]:
    """On data that record their concepts (synthetic): per planted concept, how it leans in the
    training data before and under the plan's weights. Among the pairs where the concept is on one
    side only, `data/planted_chosen_share/<c>` is the share where that side is chosen (0.5: the
    concept says nothing about the preference; 1: only chosen responses carry it), over
    `data/planted_n_differ/<c>` pairs; `intervention/planted_chosen_share/<c>` is the weighted share
    (dropped pairs weigh 0) and `intervention/planted_differ_weight/<c>` those pairs' total weight
    (weights have mean 1 over the kept pairs); `data/planted_n_present/<c>` counts the pairs that
    carry the concept on either side and `intervention/planted_present_weight/<c>` is their weight
    (0: the model never trains on it). Empty when no pair records a concept."""
    w = np.ones(len(pairs)) if weights is None else np.asarray(weights, dtype=np.float64)
    out: dict[str, float] = {}
    for name, (in_chosen, in_rejected) in concept_sides(pairs).items():
        differ = in_chosen != in_rejected
        if not differ.any():
            continue
        mass = float(w[differ].sum())
        out[f"data/planted_chosen_share/{name}"] = float(in_chosen[differ].mean())
        out[f"data/planted_n_differ/{name}"] = float(differ.sum())
        out[f"intervention/planted_chosen_share/{name}"] = float(w[differ & in_chosen].sum() / mass) if mass > 0 else float("nan")
        out[f"intervention/planted_differ_weight/{name}"] = mass
        out[f"data/planted_n_present/{name}"] = float((in_chosen | in_rejected).sum())
        out[f"intervention/planted_present_weight/{name}"] = float(w[in_chosen | in_rejected].sum())
    return out
