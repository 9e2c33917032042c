"""Benchmark: `Featurize().run` throughput against a bare forward pass of the model on the same batches.

    python tests/benchmarks/bench_featurize.py [--pairs 800 --batch-size 32 --repeats 3 --threads 2]

Builds the default study's pieces (SyntheticData(), TinyModel(), TrainSAE()), cached under
$ANATOMY_CACHE (default $TMPDIR/anatomy-bench-cache): the first run trains them (several minutes),
later runs load them in seconds. Then, on the first --pairs train pairs (both responses after their
prompt, --batch-size pairs per batch), it times: the whole `Featurize(batch_size=...).run`; a bare
full forward of the same padded batches (`model.model(input_ids=, attention_mask=)`, no hooks, no
SAE, tokenized outside the timing); and featurize's steps replicated one by one (tokenize + pad,
model up to the hook, SAE encode, pooling + sparse conversion, top-k tracking), each on the
previous step's precomputed output. Medians of --repeats (all measurements take turns within each
repeat); tokens/s count real, non-padding tokens.

Measured on 2 cores (AMD EPYC, no GPU), default arguments, while other jobs kept the machine busy
(load average ~5; no idle window came up in 30 minutes), so absolute numbers are pessimistic:

    machine     AMD EPYC, 2 cores, torch 2.13.0+cpu on 2 threads; load average 4.9 -> 6.3
    batches     800 pairs = 1600 sequences in 25 batches of 32 pairs; 83,510 tokens (60,680 response; 125,312 with padding)
    model, SAE  tiny LM 4 layers x d_model 128; SAE blocks.2.hook_resid_post, d_sae 512; median of 3 runs
    featurize      20.24 s     4,126 tok/s total     2,998 tok/s response
    bare forward   31.83 s     2,624 tok/s total
    ratio         featurize / bare forward tokens/s = 1.57
    featurize, step by step (each timed on its own):
      tokenize + pad      0.35 s   1.7%
      model up to hook   15.52 s  76.7%
      SAE encode          3.09 s  15.3%
      pool + sparse       0.03 s   0.2%
      top-k tracking      0.89 s   4.4%
      rest (the loop)     0.36 s   1.8%  (total minus steps; noisy)

Right after, with --threads 1 (same load): featurize 6.19 s (13,481 tok/s total, 9,795 response),
bare forward 7.42 s (11,249 tok/s), ratio 1.20; model up to hook 89%, SAE encode 10%, tokenize 5%.
On a busy machine 2 torch threads are 3-5x slower than 1 (each op waits for a descheduled thread).
Featurize beats the bare forward because it stops at the hook (layer 2 of 0-3) and skips the LM
head. A third of the model's work is padding (125k padded vs 84k real tokens).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

from _setup import cpu_name, default_study  # offline, bench cache, checkout on sys.path: before torch

import numpy as np
import scipy.sparse as sp
import torch

from anatomy.features import Featurize
from anatomy.models.base import encode_batch
from anatomy.models.hooks import capture


def median_times(fns, repeats):
    """Median seconds of each fn; the fns take turns in every repeat, so they share any background load."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def tokenize(tok, batches, max_length):
    """Featurize's tokenization and padding (`encode_batch`): (input_ids, mask, response mask) per batch."""
    out = []
    for batch in batches:
        texts = [(p.prompt, r) for p in batch for r in (p.chosen, p.rejected)]
        input_ids, mask, response, _ = encode_batch(tok, texts, max_length)
        out.append((input_ids, mask, response))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=800, help="train pairs featurized (at most the train split)")
    ap.add_argument("--batch-size", type=int, default=32, help="pairs per batch (two sequences each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="index_reduce")  # featurize's max pooling: "in beta"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data, model, sae = default_study()

    cfg = Featurize(batch_size=args.batch_size)
    pairs = data.train[: args.pairs]
    batches = [pairs[i:i + cfg.batch_size] for i in range(0, len(pairs), cfg.batch_size)]
    tok, net = model.tokenizer, model.model
    padded = tokenize(tok, batches, cfg.max_length)
    n_total = sum(int(m.sum()) for _, m, _ in padded)
    n_resp = sum(int(r.sum()) for _, _, r in padded)
    n_padded = sum(ids.numel() for ids, _, _ in padded)

    @torch.no_grad()
    def bare():
        for ids, mask, _ in padded:
            net(input_ids=ids, attention_mask=mask)

    # featurize's steps one at a time, each on the previous step's (precomputed) outputs
    @torch.no_grad()
    def to_hook():
        return [capture(net, sae.hook, ids, mask) for ids, mask, _ in padded]

    @torch.no_grad()
    def sae_encode():
        out = []
        for a, (_, _, resp) in zip(acts, padded):
            z = sae.sae.encode(a[resp].to(sae.sae.dtype))
            out.append((z.to_dense() if z.is_sparse else z).float().cpu())
        return out

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

    acts = to_hook()
    token_acts = sae_encode()
    load_before = os.getloadavg()[0]
    t = median_times({
        "featurize": lambda: cfg.run(model, sae, pairs),
        "bare forward": bare,
        "tokenize + pad": lambda: tokenize(tok, batches, cfg.max_length),
        "model up to hook": to_hook,
        "SAE encode": sae_encode,
        "pool + sparse": pool,
        "top-k tracking": top_k,
    }, args.repeats)
    featurize_s, bare_s = t.pop("featurize"), t.pop("bare forward")

    load = (load_before, os.getloadavg()[0])
    rate = lambda n, sec: f"{n / sec:>9,.0f} tok/s"  # noqa: E731
    print(f"machine     {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} on "
          f"{torch.get_num_threads()} threads; load average {load[0]:.1f} -> {load[1]:.1f}")
    print(f"batches     {len(pairs)} pairs = {2 * len(pairs)} sequences in {len(batches)} batches of "
          f"{cfg.batch_size} pairs; {n_total:,} tokens ({n_resp:,} response; {n_padded:,} with padding)")
    print(f"model, SAE  tiny LM {model.spec.n_layers} layers x d_model {model.spec.d_model}; "
          f"SAE {sae.hook}, d_sae {sae.d_sae}; median of {args.repeats} runs")
    print(f"featurize     {featurize_s:6.2f} s {rate(n_total, featurize_s)} total {rate(n_resp, featurize_s)} response")
    print(f"bare forward  {bare_s:6.2f} s {rate(n_total, bare_s)} total")
    print(f"ratio         featurize / bare forward tokens/s = {bare_s / featurize_s:.2f}")
    print("featurize, step by step (each timed on its own):")
    for name, sec in t.items():
        print(f"  {name:<17} {sec:6.2f} s {100 * sec / featurize_s:5.1f}%")
    rest = featurize_s - sum(t.values())
    print(f"  {'rest (the loop)':<17} {rest:6.2f} s {100 * rest / featurize_s:5.1f}%  (total minus steps; noisy)")

if __name__ == "__main__":
    main()
