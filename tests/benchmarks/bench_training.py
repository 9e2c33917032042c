"""Benchmark: DPO step time of `WeightedDPOTrainer`, bare and with an intervention's edit, against TRL's DPOTrainer.

    python tests/benchmarks/bench_training.py [--pairs 400 --steps 30 --repeats 3 --warmup 3]
    python tests/benchmarks/bench_training.py --device cuda --precision-row bf16 [--d-model 768 --layers 12]

Builds the default study's pieces (SyntheticData(), TinyModel(), TrainSAE(); cached under
$ANATOMY_CACHE, default $TMPDIR/anatomy-bench-cache, so only the first run trains them), picks 16 SAE
features (the most often active on data.train[:64]) and builds a FeatureAblation and a
FeatureSteering plan from them. Then trains DPO (the `DPO()` defaults: batch 16, max_length 160,
sigmoid loss, precomputed reference log-probs, seed 0) for --steps optimizer steps on the first
--pairs train pairs, from the same starting weights, in four configurations:

    1 stock      trl.DPOTrainer, no weight column, no hooks
    2 weighted   WeightedDPOTrainer, unit weights, no hooks        (ratio to 1)
    3 ablation   2 + the FeatureAblation plan's edit active        (ratio to 2, target <= 1.10)
    4 steering   2 + the FeatureSteering plan's edit active        (ratio to 2, target <= 1.10)

The four trainers run in threads that take turns, one optimizer step each (only one computes at a
time), so all four see the same background load, and step k of each trains on the same batch (same
data seed). A step is timed by a TrainerCallback from on_step_begin to on_step_end (forward,
backward, clip, optimizer, scheduler; not data loading, logging, nor TRL's reference-log-prob
precompute, which runs in the trainer's constructor, before any timing). s/step: the median over
all steps after --warmup of all --repeats (a fresh set of trainers each, the first mover rotating);
ratio: the median over those steps of (step / the baseline's same step), robust to other work on
the machine, which on a shared 2-core box can slow single steps twenty-fold (CPU pressure is printed).

Measured on 2 cores, default arguments, whole script 4 min, while other jobs shared the machine:

    machine   AMD EPYC, 2 cores, no GPU, torch 2.13.0+cpu on 2 threads; load average 3.1 -> 3.3,
              CPU pressure (some, avg60) 44% -> 47%
    training  400 pairs, batch 16, max_length 160, 30 steps (3 warm-up left out) x 3 repeats; tiny LM
              4 layers x d_model 128; edits at blocks.2.hook_resid_post on 16 features
    configuration             s/step      ratio  per repeat (median s/step)
    1 stock DPOTrainer         0.296          -  0.226 0.296 0.332
    2 WeightedDPOTrainer       0.303 0.995 to 1  0.220 0.318 0.321
    3 weighted + ablation      0.312 1.016 to 2  0.226 0.317 0.332
    4 weighted + steering      0.304 0.992 to 2  0.224 0.317 0.318
    one-off   trainer set-up (TRL tokenizing + reference log-prob precompute over 400 pairs, not in
              s/step): median 3.8 s
    PASS  weighted + ablation: 1.016 x weighted (target <= 1.10)
    PASS  weighted + steering: 0.992 x weighted (target <= 1.10)

Neither the edits (ablation: two (tokens x 128) @ (128 x 16) products per forward; steering: one
add) nor the weighted loss cost anything measurable: the ratios stayed within 0.97-1.02 in every
run, also at 92-96% CPU pressure, where s/step rose to ~0.47 and the set-up, which is not
interleaved (each trainer is built alone), to 32 s. Exit status 1 when a ratio misses the target.

On a GPU (`--device cuda`: the tiny LM and SAE are built on the CPU as ever, then moved) each step
is timed between CUDA synchronizations, and a second pass measures each configuration's peak GPU
memory alone: `torch.cuda.max_memory_allocated` over --memory-steps steps, less what was allocated
before them (the policy, reference and data: gradients, optimizer state and activations remain).
`--precision-row bf16` adds a fifth configuration, 2 with bf16 autocast (`trainer.mixed_precision`),
timed and measured against 2; `--mixed-precision bf16` runs all of them so. `--d-model`/`--layers`
build a wider, deeper tiny LM (pretrained only --model-steps steps: its speed, not its knowledge, is
measured), whose SAE reads the middle layer. Measured on one H100 (README, *Benchmarks*): the
hooks 0.99-1.03x, the weighted trainer's peak memory 1.000x stock's, bf16 0.80x the memory of
float32 on a 12 x 768 LM (0.91x its step time) and 0.59x on the study's (1.20x its step time).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings

from _setup import cpu_name, default_study  # offline, bench cache, checkout on sys.path: before torch

import numpy as np
import torch
from datasets import Dataset
from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from trl import DPOConfig, DPOTrainer

from anatomy.features import Featurize
from anatomy.interventions.ablation import FeatureAblation
from anatomy.interventions.steering import FeatureSteering
from anatomy.models.hooks import hooks
from anatomy.models.tiny import TinyModel
from anatomy.saes.train import TrainSAE
from anatomy.select import Selection
from anatomy.trainers.common import frozen_copy, trl_args, weighted_rows
from anatomy.trainers.dpo import DPO, WeightedDPOTrainer

TARGET = 1.10


class TakeTurns(TrainerCallback):
    """Trainers running in threads take turns, one optimizer step each; times each step (wall seconds).

    A step is timed from on_step_begin to on_step_end. Every trainer waits for all of them to be ready
    (on_train_begin), so no set-up overlaps a timed step, and only one trainer computes at a time.
    """

    def __init__(self, index, shared, sync=lambda: None):
        self.index, self.shared, self.times, self._t0, self.sync = index, shared, [], 0.0, sync

    def on_train_begin(self, args, state, control, **kwargs):
        self.shared["ready"].wait()

    def on_step_begin(self, args, state, control, **kwargs):
        with self.shared["cond"]:
            self.shared["cond"].wait_for(lambda: self.shared["turn"] in (self.index, None))
        if self.shared["turn"] is None:
            raise RuntimeError("another training run failed")
        self.sync()  # (on a GPU: no other run's kernels still in flight)
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.sync()
        self.times.append(time.perf_counter() - self._t0)
        with self.shared["cond"]:
            self.shared["turn"] = (self.index + 1) % self.shared["n"]
            self.shared["cond"].notify_all()


def cpu_pressure():
    """Share of the last minute some task waited for a CPU (Linux PSI), e.g. '12%': other work on the machine."""
    try:
        with open("/proc/pressure/cpu") as f:
            return f"{float(f.readline().split()[2].split('=')[1]):.0f}%"
    except (OSError, IndexError, ValueError):
        return "n/a"


def paired_ratio(runs, base_runs):
    """Median over steps of (this step / the baseline's same step): same repeat, same batch, taken in turn."""
    return statistics.median(t / b for run, base in zip(runs, base_runs) for t, b in zip(run, base))


def make_trainer(trainer_class, model, reference, dataset, steps, callback, out_dir, precision="no"):
    """A DPO trainer as `DPO.train` builds it, on a fresh trainable copy of the model (on its device),
    for `steps` steps, with `precision` as `trainer.mixed_precision`."""
    cfg = DPO(max_steps=steps, mixed_precision=precision)
    policy = frozen_copy(model.model).train()
    for p in policy.parameters():
        p.requires_grad_(True)
    args = trl_args(DPOConfig, out_dir, cfg, policy, beta=cfg.beta, precompute_ref_log_probs=True,
                    loss_type=["sigmoid"])
    trainer = trainer_class(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                            processing_class=model.tokenizer, callbacks=[callback])
    for quiet in (PrinterCallback, ProgressCallback):  # no loss dicts printed between the timings
        trainer.remove_callback(quiet)
    return trainer


def synchronize(device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def interleaved(runs, model, reference, steps):
    """Step times of each run (trainer class, dataset, edits, precision), taking turns step by step; and set-up times."""
    shared = {"cond": threading.Condition(), "turn": 0, "n": len(runs), "ready": threading.Barrier(len(runs))}
    sync = synchronize(model.model.device)
    timers = [TakeTurns(i, shared, sync) for i in range(len(runs))]
    with tempfile.TemporaryDirectory() as tmp:
        trainers, setup = [], []  # built one after another; TRL's reference precompute runs here
        for i, ((cls, data, _, precision), timer) in enumerate(zip(runs, timers)):
            t0 = time.perf_counter()
            trainers.append(make_trainer(cls, model, reference, data, steps, timer, f"{tmp}/{i}", precision))
            setup.append(time.perf_counter() - t0)

        def train(trainer, edits):
            try:
                with hooks(trainer.model, edits):
                    trainer.train()
            except BaseException:  # release the others instead of leaving them waiting for their turn
                with shared["cond"]:
                    shared["turn"] = None
                    shared["cond"].notify_all()
                shared["ready"].abort()
                raise

        threads = [threading.Thread(target=train, args=(trainer, edits), daemon=True)
                   for trainer, (_, _, edits, _) in zip(trainers, runs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if any(len(t.times) != steps for t in timers):
        raise RuntimeError("a training run failed (see its traceback above)")
    return [t.times for t in timers], setup


def peak_memory(run, model, reference, steps):
    """GPU memory (bytes) that training `steps` steps of `run` alone takes at its peak, beyond what was
    allocated before it started (the models and data): gradients, optimizer state, activations."""
    cls, data, edits, precision = run
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(cls, model, reference, data, steps, TrainerCallback(), tmp, precision)
        gc.collect()  # the timed trainers' optimizer state, freed mid-run, would mask this run's own
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with hooks(trainer.model, edits):
            trainer.train()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        del trainer
    return peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=400, help="train pairs in the DPO dataset")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per run (max_steps)")
    ap.add_argument("--warmup", type=int, default=3, help="first steps of each run left out of the median")
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    ap.add_argument("--features", type=int, default=16, help="SAE features the plans act on")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="where the trainers run: cpu, or cuda")
    ap.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"],
                    help="trainer.mixed_precision of configurations 1-4")
    ap.add_argument("--precision-row", default=None, choices=["bf16", "fp16"],
                    help="add configuration 5: 2 with this mixed precision, against 2")
    ap.add_argument("--memory-steps", type=int, default=5, help="steps of the peak-memory pass (GPU only)")
    ap.add_argument("--d-model", type=int, default=None, help="a tiny LM of this width (default: the study's, 128)")
    ap.add_argument("--layers", type=int, default=None, help="a tiny LM of this depth (default: the study's, 4)")
    ap.add_argument("--model-steps", type=int, default=50, help="pretraining steps of a --d-model/--layers LM")
    args = ap.parse_args()
    device = torch.device(args.device)
    warnings.filterwarnings("ignore")  # TRL / transformers deprecation chatter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model_cfg = sae_cfg = None
    if args.d_model or args.layers:
        width, depth = args.d_model or 128, args.layers or 4
        model_cfg = TinyModel(d_model=width, n_layers=depth, n_heads=max(4, width // 64), d_mlp=4 * width,
                              train_steps=args.model_steps)
        sae_cfg = TrainSAE(hook=f"blocks.{depth // 2}.hook_resid_post", training_tokens=100_000)
    data, model, sae = default_study(model_cfg=model_cfg, sae_cfg=sae_cfg)
    model.model.to(device)
    sae.sae.to(device)
    features = Featurize().run(model, sae, data.train[:64])
    active = (features.chosen + features.rejected).getnnz(axis=0)
    block = sorted(int(f) for f in np.argsort(-active, kind="stable")[: args.features])
    selection = Selection(block=block, amplify=[], reasons={}, directions={f: "chosen" for f in block})
    plans = {"ablation": FeatureAblation().plan(selection, features, sae),
             "steering": FeatureSteering().plan(selection, features, sae)}

    pairs = data.train[: args.pairs]
    stock_rows = [{k: v for k, v in row.items() if k != "weight"} for row in weighted_rows(pairs, None)]
    stock, weighted = Dataset.from_list(stock_rows), Dataset.from_list(weighted_rows(pairs, np.ones(len(pairs))))
    reference = frozen_copy(model.model)
    mp = args.mixed_precision
    configs = {  # name -> (trainer, dataset, edits, mixed precision, baseline for the ratio)
        "1 stock DPOTrainer": (DPOTrainer, stock, {}, mp, None),
        "2 WeightedDPOTrainer": (WeightedDPOTrainer, weighted, {}, mp, "1 stock DPOTrainer"),
        "3 weighted + ablation": (WeightedDPOTrainer, weighted, plans["ablation"].edits, mp, "2 WeightedDPOTrainer"),
        "4 weighted + steering": (WeightedDPOTrainer, weighted, plans["steering"].edits, mp, "2 WeightedDPOTrainer"),
    }
    if args.precision_row:
        configs[f"5 weighted, {args.precision_row}"] = (WeightedDPOTrainer, weighted, {}, args.precision_row,
                                                         "2 WeightedDPOTrainer")
    names = list(configs)
    steps = {name: [] for name in names}  # per configuration, per repeat: s/step of every step after warm-up
    setups = []  # seconds to build each trainer: mostly TRL's reference-log-prob precompute
    pressure_before, load_before = cpu_pressure(), os.getloadavg()[0]
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # who goes first rotates between repeats
        times, setup = interleaved([configs[n][:4] for n in order], model, reference, args.steps)
        setups += setup
        for name, t in zip(order, times):
            steps[name].append(t[args.warmup:])
    pressure_after, load_after = cpu_pressure(), os.getloadavg()[0]
    memory = ({name: peak_memory(configs[name][:4], model, reference, args.memory_steps) for name in names}
              if device.type == "cuda" else {})

    gpu = f"trainers on {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "no GPU"
    print(f"machine   {cpu_name()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__} on "
          f"{torch.get_num_threads()} threads; load average {load_before:.1f} -> {load_after:.1f}, "
          f"CPU pressure (some, avg60) {pressure_before} -> {pressure_after}")
    print(f"training  {len(pairs)} pairs, batch {DPO().batch_size}, max_length {DPO().max_length}, {args.steps} steps "
          f"({args.warmup} warm-up left out) x {args.repeats} repeats; tiny LM {model.spec.n_layers} layers x "
          f"d_model {model.spec.d_model}; edits at {sae.hook} on {len(block)} features; mixed precision {mp}")
    print(f"{'configuration':<24} {'s/step':>7} {'ratio':>10}  per repeat (median s/step)")
    verdicts = []
    for name, (_, _, _, _, base) in configs.items():
        median = statistics.median(t for run in steps[name] for t in run)
        per_run = " ".join(f"{statistics.median(run):.3f}" for run in steps[name])
        ratio = paired_ratio(steps[name], steps[base]) if base else None
        shown = f"{ratio:.3f} to {base[0]}" if base else "-"
        print(f"{name:<24} {median:7.3f} {shown:>10}  {per_run}")
        if name[0] in "34":  # the hooks, against the same trainer without them
            verdicts.append((name, ratio))
    print(f"one-off   trainer set-up (TRL tokenizing + reference log-prob precompute over {len(pairs)} pairs, "
          f"not in s/step): median {statistics.median(setups):.1f} s")
    if memory:
        print(f"peak GPU memory of {args.memory_steps} steps, each configuration alone, beyond the loaded models and data:")
        for name, (_, _, _, _, base) in configs.items():
            shown = f"{memory[name] / memory[base]:.3f} to {base[0]}" if base else "-"
            print(f"{name:<24} {memory[name] / 2**20:9.1f} MiB {shown:>10}")
    for name, ratio in verdicts:
        print(f"{'PASS' if ratio <= TARGET else 'FAIL'}  {name[2:]}: {ratio:.3f} x weighted (target <= {TARGET:.2f})")
    sys.exit(0 if all(r <= TARGET for _, r in verdicts) else 1)


if __name__ == "__main__":
    main()
