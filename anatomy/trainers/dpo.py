"""DPO with TRL's DPOTrainer, per-pair weights, and an explicit reference model.

TRL's DPO has no per-example weights, so `WeightedDPOTrainer` adds them: rows carry a `weight`
column, and the sigmoid loss per pair is multiplied by it before the batch mean (with unit weights
this is TRL's own loss, computed through TRL's own log-prob path). `sft_weight` > 0 adds TRL's `sft`
loss, the chosen responses' mean token NLL (RPO), each pair's tokens weighted alike. Reference log-probs are
precomputed from the reference model, a frozen copy of the starting model made before any hook
exists, so interventions never touch the reference. `DPO.train` keeps them in the stage cache
(`reference/`, keyed by the reference's weights, the tokenized pairs and what shapes the batches),
so the arms of a sweep over interventions, whose pairs differ only in weight, and the baseline
compute them once (TRL's own cache never hits for an in-memory dataset).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import transformers
import trl
from trl import DPOConfig, DPOTrainer

from anatomy.cache import cached_dir, stage_code
from anatomy.errors import AnatomyError
from anatomy.trainers.common import (Trained, WeightColumn, check_settings, fit, fitting, float32_copy, frozen_copy,
                                     nothing_fits, token_ids, trl_args, weighted_rows, whole_ids)


TOO_LONG = "their prompt alone filling"  # TRL's DPO drops those; it cuts the others to max_length


class WeightedDPOTrainer(WeightColumn, DPOTrainer):
    """DPOTrainer whose sigmoid loss weights each pair by the dataset's `weight` column; with
    `cache_reference`, the training set's reference log-probs go through the stage cache."""

    def __init__(self, *args, cache_reference: bool = False, **kwargs):
        self.cache_reference = cache_reference
        self._rows = len(kwargs.get("train_dataset") or [])  # before TRL drops the pairs that do not fit max_length
        self.reference_cache_hit: bool | None = None  # set when the cache was consulted
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if len(dataset) == 0:  # (TRL would fail on torch.cat of nothing)
            raise nothing_fits(self._rows, TOO_LONG, self.args.max_length)
        cacheable = (self.cache_reference and name == "train" and getattr(self, "_precompute_model_hash", None)
                     and set(ID_COLUMNS) <= set(dataset.column_names))  # (a TRL that names these otherwise: no cache)
        if not cacheable:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        compute = super()._precompute_ref_logps
        args = self.args
        key = {
            "reference": self._precompute_model_hash, "pairs": token_ids_digest(dataset), "batch_size": batch_size,
            "max_length": args.max_length, "truncation_mode": getattr(args, "truncation_mode", None),
            "pad_to_multiple_of": getattr(args, "pad_to_multiple_of", None),
            "padding_free": getattr(args, "padding_free", None), "ld_alpha": getattr(args, "ld_alpha", None),
            "trl": trl.__version__, "torch": torch.__version__, "code": stage_code(__name__),
            "transformers": transformers.__version__, "config": self.ref_model.config.to_json_string(),
            "device": next(self.ref_model.parameters()).device.type,  # (the weights alone miss these)
            "mixed_precision": (args.bf16, args.fp16),  # (TRL computes them under the trainer's autocast)
        }
        computed = {}

        def build(folder):
            computed["dataset"] = with_ref = compute(dataset, name, batch_size)
            np.savez(folder / "reference.npz", **{c: np.asarray(with_ref[c], dtype=np.float32) for c in REF_COLUMNS})

        folder, self.reference_cache_hit = cached_dir("reference", key, build)
        if "dataset" in computed:
            return computed["dataset"]
        from datasets import Dataset, Features, Value, concatenate_datasets

        saved = np.load(folder / "reference.npz")
        columns = Dataset.from_dict({c: saved[c] for c in REF_COLUMNS},
                                    features=Features({c: Value("float32") for c in REF_COLUMNS}))
        return concatenate_datasets([dataset, columns], axis=1)

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "weight"})

    def _compute_loss(self, model, inputs, return_outputs):
        weight = inputs.pop("weight", None)
        if weight is None:
            return super()._compute_loss(model, inputs, return_outputs)
        if self.loss_types not in (["sigmoid"], ["sigmoid", "sft"]) or not self.precompute_ref_logps:
            raise AnatomyError("weighted DPO supports loss_type sigmoid (and sft) with precomputed reference log-probs")
        keys = ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")
        model_kwargs = {k: v for k, v in inputs.items() if k not in keys}
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        per_token = outputs.log_probs[:, -seq_len:]
        chosen_logps, rejected_logps = per_token.sum(dim=1).chunk(2, dim=0)
        margin = (chosen_logps - inputs["ref_chosen_logps"]) - (rejected_logps - inputs["ref_rejected_logps"])
        per_pair = -F.logsigmoid(self.beta * margin)
        weight = weight.to(per_pair.device)
        loss = (per_pair * weight).mean() * self.loss_weights[0]
        if "sft" in self.loss_types:  # TRL's: the mean NLL over the batch's chosen tokens; here each pair's weighted
            chosen_mask = completion_mask[:, 1:].chunk(2, dim=0)[0].to(per_token.dtype)
            chosen_nll = -(per_token.chunk(2, dim=0)[0] * chosen_mask).sum(dim=1)
            loss = loss + self.loss_weights[1] * (chosen_nll * weight).sum() / chosen_mask.sum().clamp(min=1.0)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["rewards/accuracies"].append((margin > 0).float().mean().item())
        self._metrics[mode]["rewards/margins"].append((self.beta * margin).mean().item())
        return (loss, outputs) if return_outputs else loss


REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
ID_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def token_ids_digest(dataset) -> str:
    """A hash of a tokenized DPO dataset's token ids (prompt, chosen, rejected; not the weights)."""
    h = hashlib.sha256()
    for batch in dataset.select_columns(list(ID_COLUMNS)).with_format("arrow").iter(batch_size=10_000):
        for column in ID_COLUMNS:
            array = batch[column].combine_chunks()  # (the content, however Arrow happens to chunk it)
            h.update(np.asarray(array.value_lengths()).tobytes())
            h.update(np.asarray(array.flatten()).tobytes())
    return h.hexdigest()


def shared_prefix(ids: list[int], other: list[int]) -> int:
    """How many leading tokens two token-id lists share."""
    n = 0
    for a, b in zip(ids, other):
        if a != b:
            break
        n += 1
    return n


@dataclass
class DPO:
    """Direct preference optimization (TRL), weighted by the intervention's plan."""

    beta: float = 0.1  # DPO temperature: strength of the implicit KL to the reference
    lr: float = 1e-4  # AdamW learning rate (linear decay)
    epochs: float = 2.0  # passes over the (kept) training pairs
    max_steps: int = 0  # > 0: train exactly this many steps instead (the same budget for every intervention)
    batch_size: int = 16  # pairs per step
    max_length: int = 160  # tokens per prompt + response
    seed: int = 0  # seeds TRL's data order and dropout
    mixed_precision: str = "no"  # "bf16" (or "fp16", GPU only): forward passes in half precision, weights float32
    sft_weight: float = 0.0  # > 0: adds this times the chosen responses' token NLL to the loss (RPO); 0: plain DPO
    enabled: bool = True  # this option trains

    def __post_init__(self):
        check_settings(self)

    def losses(self) -> dict:
        """TRL's `loss_type` and `loss_weights` for these settings: sigmoid DPO, and RPO's NLL term."""
        if self.sft_weight > 0:
            return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, self.sft_weight]}
        return {"loss_type": ["sigmoid"]}

    def fits(self, tokenizer, pairs) -> np.ndarray:
        """Which pairs TRL's DPO will train on, by its own rule: it drops a pair whose prompt alone fills
        `max_length` (its default `keep_start` truncation would leave no response token), the prompt
        being the leading tokens prompt + chosen and prompt + rejected share with the prompt's own."""
        prompts = token_ids(tokenizer, [p.prompt for p in pairs])
        chosen, rejected = whole_ids(tokenizer, pairs)
        prompt_len = [min(shared_prefix(a, b), shared_prefix(a, c)) for a, b, c in zip(prompts, chosen, rejected)]
        return fitting(np.asarray(prompt_len) < self.max_length, TOO_LONG, self.max_length)

    def train(self, model, pairs, plan) -> Trained:
        from datasets import Dataset

        reference = float32_copy(model.model)  # before any hook exists
        policy = frozen_copy(reference).train()
        for p in policy.parameters():
            p.requires_grad_(True)
        dataset = Dataset.from_list(weighted_rows(pairs, plan.weights))
        report = fit(policy, plan, len(dataset), lambda tmp: WeightedDPOTrainer(
            model=policy, ref_model=reference, train_dataset=dataset, processing_class=model.tokenizer,
            cache_reference=True,
            args=trl_args(DPOConfig, tmp, self, policy, beta=self.beta, precompute_ref_log_probs=True,
                          **self.losses())),
            TOO_LONG)
        return Trained("dpo", policy, reference, model.tokenizer, report)
