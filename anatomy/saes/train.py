"""Train an SAE with sae-lens on the model's activations at one hook, over the study's texts.

Activations of every token of every (prompt, response) are read through the named hook, kept on the
CPU, shuffled (seeded), and streamed to sae-lens's `SAETrainer`, which trains on the model's device.
The result is saved with `save_inference_model` into the stage cache and loaded back with
`SAE.load_from_disk`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from anatomy.cache import cached_dir, stage_code, texts_digest
from anatomy.errors import AnatomyError
from anatomy.models.base import LoadedModel, ModelSpec, encode_batch
from anatomy.models.hooks import canonical_hook_name, capture, parse_hook
from anatomy.saes.base import LoadedSAE

ARCHITECTURES = ("topk", "standard", "batchtopk")


@dataclass
class TrainSAE:
    """Train an SAE on the study's own activations (the default)."""

    hook: str = "blocks.2.hook_resid_post"  # TransformerLens-style hook point to read
    architecture: str = "topk"  # topk | standard (L1) | batchtopk
    expansion: int = 4  # d_sae = expansion * d_model
    k: int = 16  # active latents per token (topk, batchtopk)
    l1_coefficient: float = 5.0  # sparsity penalty (standard)
    training_tokens: int = 300_000  # activations seen in training (the texts are cycled)
    batch_size: int = 1024  # activations per step
    lr: float = 3e-3  # Adam learning rate
    max_length: int = 128  # tokens per text when reading activations
    seed: int = 0  # seeds the initialisation and the shuffling

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise AnatomyError(f"sae.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        for name in ("expansion", "k", "training_tokens", "batch_size", "max_length"):
            if int(getattr(self, name)) <= 0:
                raise AnatomyError(f"sae.{name} must be positive, got {getattr(self, name)}")
        self.hook = canonical_hook_name(self.hook)

    def check(self, spec: ModelSpec) -> None:
        """Fail before any model is built if the hook does not exist in the model."""
        parse_hook(self.hook, spec.n_layers)

    def load(self, model: LoadedModel, texts: list[tuple[str, str]], model_key: str) -> tuple[LoadedSAE, bool]:
        corpus = texts_digest(texts)
        key = {"sae": asdict(self), "model": model_key, "texts": corpus, "code": stage_code(__name__)}
        folder, hit = cached_dir("sae", key, lambda d: self.build(model, texts, d))
        from sae_lens import SAE

        sae = SAE.load_from_disk(str(folder), device=str(model.model.device))
        return LoadedSAE(sae, self.hook, sae.cfg.d_in, sae.cfg.d_sae, str(folder)), hit

    def build(self, model: LoadedModel, texts: list[tuple[str, str]], folder: Path) -> None:
        from sae_lens import (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, SAETrainer, StandardTrainingSAE,
                              StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig)
        from sae_lens.config import SAETrainerConfig

        torch.manual_seed(self.seed)
        acts = collect_activations(model, texts, self.hook, self.max_length)
        d_in = acts.shape[1]
        d_sae = self.expansion * d_in
        if self.architecture == "topk":
            sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=self.k))
        elif self.architecture == "batchtopk":
            sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=self.k))
        else:
            sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=self.l1_coefficient))
        sae.cfg.metadata.hook_name = self.hook
        sae.cfg.metadata.model_name = model.path
        trainer = SAETrainer(
            SAETrainerConfig(
                total_training_samples=self.training_tokens, train_batch_size_samples=self.batch_size,
                lr=self.lr, lr_end=self.lr / 10, lr_scheduler_name="cosineannealing",
                device=str(model.model.device), n_batches_for_norm_estimate=10,
            ),
            sae,
            _batches(acts, self.batch_size, self.seed),
        )
        trainer.fit()
        sae.save_inference_model(folder)
        (folder / "anatomy.json").write_text(json.dumps({"hook": self.hook, "n_activations": int(acts.shape[0])}))


@torch.no_grad()
def collect_activations(model: LoadedModel, texts: list[tuple[str, str]], hook: str, max_length: int,
                        batch_size: int = 64) -> torch.Tensor:
    """Every non-padding token's activation at `hook`, as one (n_tokens, d_model) float32 tensor."""
    out = []
    tok = model.tokenizer
    for start in tqdm(range(0, len(texts), batch_size), desc=f"Reading activations at {hook}", unit="batch"):
        input_ids, mask, _, _ = encode_batch(tok, texts[start:start + batch_size], max_length)
        act = capture(model.model, hook, input_ids.to(model.model.device), mask.to(model.model.device))
        out.append(act[mask.bool().to(act.device)].float().cpu())
    if not out:
        raise AnatomyError("no text to read activations from")
    return torch.cat(out)


def _batches(acts: torch.Tensor, batch_size: int, seed: int):
    """An endless, seeded, shuffled stream of activation batches (what sae-lens calls a data provider)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(acts.shape[0], generator=gen)
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            yield acts[perm[i:i + batch_size]]
        if len(perm) < batch_size:
            yield acts[perm]
