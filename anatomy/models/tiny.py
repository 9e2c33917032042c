"""A small Llama-style causal LM built for the study's own texts, fully offline.

A byte-level BPE tokenizer is trained on the texts, a randomly initialised model is pretrained on
them for a fixed number of seeded steps, and both are saved with `save_pretrained` into the stage
cache, then loaded back by path through the same code as any hub model (`hf.load_pretrained`).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from anatomy.cache import cached_dir, stage_code, texts_digest
from anatomy.errors import AnatomyError
from anatomy.models.base import LoadedModel, ModelSpec, encode_pair
from anatomy.models.hf import load_pretrained

SPECIALS = ["<|endoftext|>", "<pad>"]
log = logging.getLogger(__name__)


@dataclass
class TinyModel:
    """Build, pretrain and cache a tiny LM on the study's texts (the default model)."""

    d_model: int = 128  # residual stream width
    n_layers: int = 4  # decoder layers
    n_heads: int = 4  # attention heads
    d_mlp: int = 512  # MLP hidden width
    vocab_size: int = 2048  # BPE vocabulary target (a small closed corpus may stop earlier)
    context: int = 96  # tokens per pretraining sequence (and the longest position)
    train_steps: int = 250  # pretraining steps
    batch_size: int = 16  # sequences per step
    lr: float = 3e-3  # peak AdamW learning rate (cosine decay, 5% warm-up)
    seed: int = 0  # seeds the initialisation and the batch order

    def __post_init__(self):
        for name in ("d_model", "n_layers", "n_heads", "d_mlp", "vocab_size", "context", "train_steps", "batch_size"):
            if int(getattr(self, name)) <= 0:
                raise AnatomyError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise AnatomyError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")

    def spec(self) -> ModelSpec:
        return ModelSpec("tiny", self.d_model, self.n_layers)

    def check(self, trains: bool) -> None:
        """Nothing to check: the tiny LM is built, trained and used on the CPU."""

    def load(self, texts: list[tuple[str, str]]) -> tuple[LoadedModel, bool]:
        """The cached model for these texts and this config, building it if needed. -> (model, cache hit)"""
        corpus = texts_digest(texts)
        key = {"tiny": asdict(self), "texts": corpus, "code": stage_code(__name__)}
        folder, hit = cached_dir("model", key, lambda d: self.build(texts, d))
        loaded = load_pretrained(str(folder))
        return LoadedModel(loaded.model, loaded.tokenizer, self.spec(), str(folder)), hit

    def build(self, texts: list[tuple[str, str]], folder: Path) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(self.seed)
        tokenizer = train_tokenizer(texts, self.vocab_size)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=self.d_model, intermediate_size=self.d_mlp,
            num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads, num_key_value_heads=self.n_heads,
            max_position_embeddings=self.context, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=None, tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(config)
        self._pretrain(model, tokenizer, texts)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    def _pretrain(self, model, tokenizer, texts) -> None:
        # Pack each (prompt, response) with an end-of-text token into fixed-length sequences.
        stream: list[int] = []
        for prompt, response in texts:
            ids, _ = encode_pair(tokenizer, prompt, response, self.context)
            stream += ids + [tokenizer.eos_token_id]
        n_seq = len(stream) // self.context
        if n_seq < 1:
            raise AnatomyError(f"too little text to pretrain the tiny model ({len(stream)} tokens)")
        data = torch.tensor(stream[: n_seq * self.context]).view(n_seq, self.context)
        optim = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=0.01, betas=(0.9, 0.95))
        warm = max(1, self.train_steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            optim, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / self.train_steps)))
        )
        order = random.Random(self.seed)
        model.train()
        log.info("pretraining the tiny LM: %d steps of %d sequences", self.train_steps, self.batch_size)
        bar = tqdm(range(self.train_steps), desc="Pretraining tiny LM", unit="step")
        for _ in bar:
            idx = torch.tensor([order.randrange(n_seq) for _ in range(self.batch_size)])
            batch = data[idx]
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()


def train_tokenizer(texts: list[tuple[str, str]], vocab_size: int):
    """A byte-level BPE tokenizer trained on (prompt, response) texts, with an end-of-text and a pad
    token: the tiny LM's, and any other model built for a study's own texts."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator((s for pair in texts for s in pair), vocab_size=vocab_size, min_frequency=2,
                            special_tokens=SPECIALS, show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=SPECIALS[0], pad_token=SPECIALS[1])
