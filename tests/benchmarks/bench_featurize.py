"""Benchmark: `Featurize().run` throughput against a bare forward pass of the model on the same batches.

    python tests/benchmarks/bench_featurize.py [--pairs 800 --batch-size 32 --repeats 3 --threads 2]
    python tests/benchmarks/bench_featurize.py --hh-rlhf ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz

Builds the default study's pieces (SyntheticData(), TinyModel(), TrainSAE()), cached under
$ANATOMY_CACHE (default $TMPDIR/anatomy-bench-cache): the first run trains them (several minutes),
later runs load them in seconds. Then, on the first --pairs train pairs (both responses after their
prompt, --batch-size pairs per batch), it times: the whole `Featurize(batch_size=...).run`; a bare
full forward of the same padded batches (`model.model(input_ids=, attention_mask=)`, no hooks, no
SAE, tokenized outside the timing); and featurize's steps replicated one by one (tokenize + pad,
model up to the hook, SAE encode, pooling + sparse conversion, top-k tracking), each on the
previous step's precomputed output. It also times the model up to the hook on the same sequences
batched in pair order (what featurize did before it batched by length). Medians of --repeats (all
measurements take turns within each repeat); tokens/s count real, non-padding tokens. With
--hh-rlhf FILE the pairs are that HH-RLHF file's (a local copy; `HHRLHFData(path=FILE)`), with a
tiny LM and SAE built on them the same way.

Measured on 2 cores (AMD EPYC, no GPU), default arguments:

    machine     AMD EPYC, 2 cores, torch 2.13.0+cpu on 2 threads; load average 1.3 -> 1.7
    batches     800 pairs = 1600 sequences in 25 batches of 64 sequences; 83,510 tokens (60,680 response; 85,632 with padding, 125,312 in pair order)
    model, SAE  tiny LM 4 layers x d_model 128; SAE blocks.2.hook_resid_post, d_sae 512; median of 3 runs
    featurize       1.95 s    42,736 tok/s total    31,053 tok/s response
    bare forward    2.21 s    37,713 tok/s total
    ratio         featurize / bare forward tokens/s = 1.13
    featurize, step by step (each timed on its own):
      tokenize + pad      0.18 s   9.4%
      model up to hook    1.39 s  70.9%
      SAE encode          0.25 s  12.8%
      pool + sparse       0.02 s   0.9%
      top-k tracking      0.09 s   4.6%
      rest (the loop)     0.03 s   1.3%  (total minus steps; noisy)
    batching by length: model up to hook 1.39 s, in pair order 2.40 s = 1.73x faster by length

With --hh-rlhf ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz (the first 800 of its 1,846
training pairs; many responses reach featurize's max_length of 256 tokens with their prompt):

    batches     800 pairs = 1600 sequences in 25 batches of 64 sequences; 254,930 tokens (86,218 response; 262,144 with padding, 409,600 in pair order)
    featurize       8.67 s    29,398 tok/s total     9,942 tok/s response
    bare forward   11.85 s    21,517 tok/s total
    ratio         featurize / bare forward tokens/s = 1.37
      model up to hook    6.65 s  76.7%
    batching by length: model up to hook 6.65 s, in pair order 13.10 s = 1.97x faster by length

Featurize beats the bare forward because it stops at the hook (layer 2 of 0-3) and skips the LM
head. Against the previous featurize, which batched in pair order, the whole of it on the default
study's 800 pairs took 1.73 s instead of 2.40 s (1.39x faster; median of 5 alternating runs, same
machine, an A/B of the two versions of the code).
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

from anatomy.features import Featurize, encode_responses
from anatomy.models.base import pad_batch
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


def tokenize(tok, pairs, batch_size, max_length, by_length=True):
    """Featurize's tokenization and padding (`encode_responses`, then `pad_batch` per batch of
    2 * batch_size sequences), in featurize's length order or in pair order.
    -> [(input_ids, mask, response mask)] per batch, and the order of the sequences."""
    encoded, order = encode_responses(tok, pairs, max_length)
    order = order if by_length else np.arange(len(encoded))
    out = []
    for start in range(0, len(order), 2 * batch_size):
        input_ids, mask, response, _ = pad_batch(tok, [encoded[i] for i in order[start:start + 2 * batch_size]])
        out.append((input_ids, mask, response))
    return out, order


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=800, help="train pairs featurized (at most the train split)")
    ap.add_argument("--batch-size", type=int, default=32, help="pairs per batch (two sequences each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--hh-rlhf", metavar="FILE", help="featurize this HH-RLHF file's pairs instead of the synthetic ones")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="index_reduce")  # featurize's max pooling: "in beta"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.hh_rlhf:
        from anatomy.data.hh_rlhf import HHRLHFData

        data, model, sae = default_study(HHRLHFData(path=args.hh_rlhf, max_pairs=100_000))
    else:
        data, model, sae = default_study()

    cfg = Featurize(batch_size=args.batch_size)
    pairs = data.train[: args.pairs]
    tok, net = model.tokenizer, model.model
    padded, order = tokenize(tok, pairs, cfg.batch_size, cfg.max_length)
    in_pair_order, _ = tokenize(tok, pairs, cfg.batch_size, cfg.max_length, by_length=False)
    n_total = sum(int(m.sum()) for _, m, _ in padded)
    n_resp = sum(int(r.sum()) for _, _, r in padded)
    n_padded = sum(ids.numel() for ids, _, _ in padded)

    @torch.no_grad()
    def bare():
        for ids, mask, _ in padded:
            net(input_ids=ids, attention_mask=mask)

    # featurize's steps one at a time, each on the previous step's (precomputed) outputs
    @torch.no_grad()
    def to_hook(batches=padded):
        return [capture(net, sae.hook, ids, mask) for ids, mask, _ in batches]

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
            pooled.scatter_reduce_(0, seq.unsqueeze(1).expand_as(z), z, "amax")
            rows.append(sp.csr_matrix(pooled.numpy()))
        stacked = sp.vstack(rows).tocsr()[np.argsort(order)]
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
        "tokenize + pad": lambda: tokenize(tok, pairs, cfg.batch_size, cfg.max_length),
        "model up to hook": to_hook,
        "SAE encode": sae_encode,
        "pool + sparse": pool,
        "top-k tracking": top_k,
        "in pair order": lambda: to_hook(in_pair_order),
    }, args.repeats)
    featurize_s, bare_s, pair_order_s = t.pop("featurize"), t.pop("bare forward"), t.pop("in pair order")

    load = (load_before, os.getloadavg()[0])
    rate = lambda n, sec: f"{n / sec:>9,.0f} tok/s"  # noqa: E731
    print(f"machine     {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} on "
          f"{torch.get_num_threads()} threads; load average {load[0]:.1f} -> {load[1]:.1f}")
    print(f"batches     {len(pairs)} pairs = {2 * len(pairs)} sequences in {len(padded)} batches of "
          f"{2 * cfg.batch_size} sequences; {n_total:,} tokens ({n_resp:,} response; {n_padded:,} with padding, "
          f"{sum(ids.numel() for ids, _, _ in in_pair_order):,} in pair order)")
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
    print(f"batching by length: model up to hook {t['model up to hook']:.2f} s, in pair order {pair_order_s:.2f} s "
          f"= {pair_order_s / t['model up to hook']:.2f}x faster by length")

if __name__ == "__main__":
    main()
