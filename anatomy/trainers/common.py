"""What trainers share: the weighted dataset, the TRL arguments, the weight-carrying collator."""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from dataclasses import dataclass, fields

import numpy as np
import torch

from anatomy.data.schema import PreferencePair
from anatomy.errors import AnatomyError
from anatomy.models.hooks import hooks

log = logging.getLogger(__name__)


@dataclass
class Trained:
    kind: str  # "dpo" | "reward_model"
    policy: torch.nn.Module  # the trained model, hooks removed
    reference: torch.nn.Module  # the starting point (DPO's reference model; the untrained reward model)
    tokenizer: object
    report: dict[str, float]


def weighted_rows(pairs: list[PreferencePair], weights: np.ndarray | None, joined: bool = False) -> list[dict]:
    """Rows for a TRL dataset; pairs of weight 0 are left out, the rest carry their weight."""
    if weights is None:
        weights = np.ones(len(pairs))
    if len(weights) != len(pairs):
        raise AnatomyError(f"the plan has {len(weights)} weights for {len(pairs)} training pairs")
    rows = []
    for pair, w in zip(pairs, weights):
        if w <= 0:
            continue
        if joined:
            rows.append({"chosen": pair.prompt + pair.chosen, "rejected": pair.prompt + pair.rejected, "weight": float(w)})
        else:
            rows.append({"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected, "weight": float(w)})
    if not rows:
        raise AnatomyError("no training pair has a positive weight")
    return rows


class WeightCollator:
    """Wraps a TRL collator: adds the batch's `weight` tensor when the rows carry one."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        out = self.inner(examples)
        if "weight" in examples[0]:
            out["weight"] = torch.tensor([float(e["weight"]) for e in examples], dtype=torch.float)
        return out


class WeightColumn:
    """Mixin for a TRL trainer: keep the dataset's `weight` column and collate it into the batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_collator = WeightCollator(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "weight" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "weight"]


def trl_args(config_class, out_dir: str, cfg, policy: torch.nn.Module, **extra):
    """TRL's arguments for `cfg` (a trainer option); training runs where the policy's weights are
    (`use_cpu` only when they are on the CPU, so a model loaded on a GPU trains there)."""
    on_cpu = next(policy.parameters()).device.type == "cpu"
    # TRL turns checkpointing on by default; transformers 5 renamed the key (the old one warns)
    names = {f.name for f in fields(config_class)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return config_class(
        output_dir=out_dir, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1, max_length=cfg.max_length, seed=cfg.seed, data_seed=cfg.seed,
        report_to=[], save_strategy="no", logging_steps=10, use_cpu=on_cpu, dataloader_num_workers=0,
        lr_scheduler_type="linear", warmup_steps=0, **{checkpointing: False},
        bf16=cfg.mixed_precision == "bf16", fp16=cfg.mixed_precision == "fp16",
        **extra,
    )


def fit(policy: torch.nn.Module, plan, n_rows: int, make_trainer, too_long: str) -> dict[str, float]:
    """Build the TRL trainer (`make_trainer(output_dir)`) on a dataset of `n_rows` pairs, train with
    the plan's edits on the policy (removed afterwards, also if training raises), and report.

    The pairs TRL cannot train on (`too_long` says which) were left out before the plan was made
    (`fitting`); should TRL drop any of the rest, how many is added to `train/pairs_too_long` and
    warned about, never silent, and it is an error if that is all of them."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # TRL reads transformers' deprecated `is_gradient_checkpointing`: noise the user cannot act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        trainer = make_trainer(tmp)
        kept = len(trainer.train_dataset)
        if kept == 0:
            raise nothing_fits(n_rows, too_long, trainer.args.max_length)
        if kept < n_rows:
            log.warning("trainer: TRL dropped %d of the %d training pairs it was given, %s trainer.max_length=%d, "
                        "after the intervention was planned on them; raise it to keep them",
                        n_rows - kept, n_rows, too_long, trainer.args.max_length)
        try:
            with hooks(policy, plan.edits):
                result = trainer.train()
        finally:  # (TRL prepares DPO's reference model too, and evaluation scores against it)
            for prepared in (policy, getattr(trainer, "ref_model", None)):
                if prepared is not None:
                    without_autocast(prepared)
    policy.eval()
    report = {"train/loss": float(result.training_loss), "train/pairs": float(kept),
              "train/pairs_too_long": float(n_rows - kept), "train/steps": float(result.global_step)}
    if getattr(trainer, "reference_cache_hit", None) is not None:  # DPO's reference log-probs, from the cache
        report["cache/reference"] = float(trainer.reference_cache_hit)
    return report


def without_autocast(model: torch.nn.Module) -> None:
    """Undo what training with mixed precision did to the model: accelerate wraps its `forward` in
    autocast (keeping the original as `_original_forward`), and left so, every later forward pass,
    the evaluation's and the saved model's users', would run in half precision too."""
    original = model.__dict__.pop("_original_forward", None)
    if original is not None:
        model.forward = original


def check_precision(trainer, device: str) -> None:
    """Before any weight loads: the trainer's mixed precision can run on the model's device."""
    from anatomy.models.base import parse_device

    mixed = getattr(trainer, "mixed_precision", "no")
    kind = parse_device(device).type
    if mixed == "fp16" and kind not in ("cuda", "mps"):
        raise AnatomyError(f"trainer.mixed_precision=fp16 needs a GPU (model.device={device}); use bf16 or no")
    if mixed == "bf16" and kind == "cpu":
        log.warning("trainer.mixed_precision=bf16 on the CPU: most CPUs have no bfloat16 arithmetic, and there "
                    "autocast makes training several times slower than float32 (8x on a 2-core AVX2 machine)")
    if mixed == "bf16" and kind == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise AnatomyError(f"trainer.mixed_precision=bf16: this GPU ({torch.cuda.get_device_name()}) has no "
                           "bfloat16; use fp16 or no")


def nothing_fits(n_rows: int, too_long: str, max_length: int) -> AnatomyError:
    return AnatomyError(f"trainer: TRL would drop all {n_rows} training pairs, {too_long} "
                        f"trainer.max_length={max_length}; raise it")


def fitting(fits: np.ndarray, too_long: str, max_length: int) -> np.ndarray:
    """`fits` (which training pairs TRL keeps), said: an error if it keeps none, a warning naming how
    many it drops. The pipeline leaves those out before the intervention is planned, so its weights
    and report describe the pairs trained on."""
    fits = np.asarray(fits, dtype=bool)
    if not fits.any():
        raise nothing_fits(len(fits), too_long, max_length)
    if not fits.all():
        log.warning("trainer: %d of %d training pairs do not fit, %s trainer.max_length=%d: TRL would drop them, "
                    "so they are left out before the intervention is planned; raise it to keep them",
                    int((~fits).sum()), len(fits), too_long, max_length)
    return fits


def token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's token ids as TRL's dataset preparation has them (the tokenizer called on the text)."""
    return tokenizer(texts)["input_ids"] if texts else []


def whole_ids(tokenizer, pairs: list[PreferencePair]) -> tuple[list[list[int]], list[list[int]]]:
    """Each pair's prompt + chosen and prompt + rejected token ids as TRL's dataset preparation has
    them: with the EOS token it appends to a response that does not end with it. -> (chosen, rejected)"""
    eos = tokenizer.eos_token
    def ids(texts: list[str]) -> list[list[int]]:
        return token_ids(tokenizer, [t if not eos or t.endswith(eos) else t + eos for t in texts])
    return ids([p.prompt + p.chosen for p in pairs]), ids([p.prompt + p.rejected for p in pairs])


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def float32_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen float32 copy to train from (or score against): Adam's small updates do not take on
    half-precision weights (bfloat16 rounds them away, float16 underflows), so a model loaded in
    `model.dtype=bfloat16` / `float16` for the audit trains, and is measured, in float32."""
    say_float32(next(model.parameters()).dtype)
    return frozen_copy(model).float()


def say_float32(dtype: torch.dtype) -> None:
    """Log, for a model loaded in half precision, that training runs in float32 (`float32_copy`)."""
    if dtype != torch.float32:
        log.info("training in float32: model.dtype=%s serves the audit; half-precision weights would not "
                 "take the optimizer's small updates", str(dtype).removeprefix("torch."))


def check_settings(trainer) -> None:
    """The numbers every trainer needs in range, each wrong one named with its value."""
    rules = {"beta": (lambda v: v > 0, "> 0"), "lr": (lambda v: v > 0, "> 0"), "epochs": (lambda v: v > 0, "> 0"),
             "batch_size": (lambda v: v >= 1, ">= 1"), "max_steps": (lambda v: v >= 0, ">= 0 (0: epochs decide)"),
             "mixed_precision": (lambda v: v in ("no", "bf16", "fp16"), "no, bf16 or fp16"),
             "sft_weight": (lambda v: v >= 0, ">= 0 (0: plain DPO)")}
    wrong = [f"trainer.{name}={getattr(trainer, name)} (must be {need})" for name, (ok, need) in rules.items()
             if hasattr(trainer, name) and not ok(getattr(trainer, name))]
    if wrong:
        raise AnatomyError("; ".join(wrong))
