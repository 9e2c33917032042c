"""Benchmark: `Featurize().run` throughput against a bare forward pass of the model on the same batches.

    python tests/benchmarks/bench_featurize.py [--pairs 800 --batch-size 32 --repeats 3]

Builds the default study's pieces (SyntheticData(), TinyModel(), TrainSAE(); cached under
$ANATOMY_CACHE, default /tmp/anatomy-bench-cache, so only the first run trains them), then times on
the first --pairs train pairs (both responses after their prompt, --batch-size pairs per batch):
the whole `Featurize(batch_size=...).run(model, sae, pairs)`; a bare full forward of the same padded
batches (`model.model(input_ids, attention_mask)`, no hooks or SAE, tokenized outside the timing);
and featurize's steps replicated one at a time (tokenize + pad, model up to the hook, SAE encode,
pooling + sparse conversion, top-k tracking). Times are medians of --repeats; tokens are real
(non-padding) tokens.

Measured on 2 cores (AMD EPYC, no GPU, torch 2 threads), default arguments:

    (filled in below)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("ANATOMY_CACHE", "/tmp/anatomy-bench-cache")
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars inside the timings
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout, uninstalled
from anatomy.data.synthetic import SyntheticData
from anatomy.features import Featurize
from anatomy.models.base import encode_pair
from anatomy.models.hooks import capture
from anatomy.models.tiny import TinyModel
from anatomy.saes.train import TrainSAE


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tokenize(tok, batches, max_length):
    """Featurize's tokenization and padding: (input_ids, mask, response mask) per batch."""
    out = []
    for batch in batches:
        encoded = [encode_pair(tok, p.prompt, r, max_length) for p in batch for r in (p.chosen, p.rejected)]
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(encoded), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        response = torch.zeros((len(encoded), width), dtype=torch.bool)
        for i, (ids, start) in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
            response[i, start: len(ids)] = True
            np.asarray(ids[start:], dtype=np.int32)  # featurize keeps every response's tokens
        out.append((input_ids, mask, response))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=800, help="train pairs featurized (at most the train split)")
    ap.add_argument("--batch-size", type=int, default=32, help="pairs per batch (two sequences each)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    print(f"ANATOMY_CACHE={os.environ['ANATOMY_CACHE']}")
    t0 = time.perf_counter()
    data = SyntheticData().load()
    texts = data.texts()
    model, model_hit = TinyModel().load(texts)
    sae, sae_hit = TrainSAE().load(model, texts, model.path)
    print(f"set-up {time.perf_counter() - t0:.1f} s (tiny model {'cached' if model_hit else 'built'}, "
          f"SAE {'cached' if sae_hit else 'trained'}; later runs reuse the cache)")

    cfg = Featurize(batch_size=args.batch_size)
    pairs = data.train[: args.pairs]
    batches = [pairs[i:i + cfg.batch_size] for i in range(0, len(pairs), cfg.batch_size)]
    tok, net = model.tokenizer, model.model
    padded = tokenize(tok, batches, cfg.max_length)
    n_total = sum(int(m.sum()) for _, m, _ in padded)
    n_resp = sum(int(r.sum()) for _, _, r in padded)
    n_padded = sum(ids.numel() for ids, _, _ in padded)

    featurize_s = median_time(lambda: cfg.run(model, sae, pairs), args.repeats)

    @torch.no_grad()
    def bare():
        for ids, mask, _ in padded:
            net(input_ids=ids, attention_mask=mask)

    bare_s = median_time(bare, args.repeats)

    # featurize's steps one at a time, each on the previous step's (precomputed) outputs
    @torch.no_grad()
    def to_hook():
        return [capture(net, sae.hook, ids, mask) for ids, mask, _ in padded]

    acts = to_hook()

    @torch.no_grad()
    def sae_encode():
        out = []
        for a, (_, _, resp) in zip(acts, padded):
            z = sae.sae.encode(a[resp].to(sae.sae.dtype))
            out.append((z.to_dense() if z.is_sparse else z).float().cpu())
        return out

    token_acts = sae_encode()

    def pool():
        rows = []
        for z, (_, _, resp) in zip(token_acts, padded):
            seq = torch.arange(resp.shape[0]).unsqueeze(1).expand_as(resp)[resp]
            pooled = torch.zeros(resp.shape[0], sae.d_sae)
            pooled.index_reduce_(0, seq, z, "amax", include_self=True)
            rows.append(sp.csr_matrix(pooled.numpy()))
        stacked = sp.vstack(rows).tocsr()
        return stacked[0::2].astype(np.float32), stacked[1::2].astype(np.float32)

    def top_k():
        k, seen = cfg.top_examples, 0
        top_values, top_where = torch.zeros(k, sae.d_sae), torch.full((k, sae.d_sae), -1, dtype=torch.long)
        for z in token_acts:
            where = torch.arange(seen, seen + z.shape[0]).unsqueeze(1).expand_as(z)
            top_values, idx = torch.cat([top_values, z]).topk(k, dim=0)
            top_where = torch.cat([top_where, where]).gather(0, idx)
            seen += z.shape[0]

    steps = {
        "tokenize + pad": median_time(lambda: tokenize(tok, batches, cfg.max_length), args.repeats),
        "model up to hook": median_time(to_hook, args.repeats),
        "SAE encode": median_time(sae_encode, args.repeats),
        "pool + sparse": median_time(pool, args.repeats),
        "top-k tracking": median_time(top_k, args.repeats),
    }

    rate = lambda n, s: f"{n / s:>10,.0f} tok/s"  # noqa: E731
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats}")
    print(f"pairs {len(pairs)} ({2 * len(pairs)} sequences, {len(batches)} batches of {cfg.batch_size} pairs); "
          f"tokens {n_total:,} ({n_resp:,} response, {n_padded:,} padded); "
          f"d_sae {sae.d_sae}, hook {sae.hook} of {model.spec.n_layers} layers")
    print(f"featurize     {featurize_s:7.3f} s  {rate(n_total, featurize_s)} total  {rate(n_resp, featurize_s)} response")
    print(f"bare forward  {bare_s:7.3f} s  {rate(n_total, bare_s)} total")
    print(f"featurize / bare forward (tokens/s)  {bare_s / featurize_s:.2f}x")
    print("featurize breakdown (steps timed separately):")
    for name, s in steps.items():
        print(f"  {name:<17} {s:7.3f} s  {100 * s / featurize_s:5.1f}%")
    rest = featurize_s - sum(steps.values())
    print(f"  {'rest (loop, tqdm)':<17} {rest:7.3f} s  {100 * rest / featurize_s:5.1f}%")


if __name__ == "__main__":
    main()
