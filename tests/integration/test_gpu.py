"""The GPU paths, where a CUDA GPU is visible (skipped elsewhere, as in CI): `model=hf` with
`model.device=cuda` through the whole loop, in float32 and with bf16 mixed precision, and the GPU's
numbers against the CPU's on the same weights.

    python -m pytest tests/integration/test_gpu.py     # on a machine with a GPU

The default study's tiny LM stays on the CPU (`model=tiny` has no device), so these use the random
GPT-NeoX that `test_hf_models.py` saves with `save_pretrained`: they check the plumbing on a GPU
(devices, autocast, the interventions' edits), not what is learned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import AUDIT, compose, run_study
from test_hf_models import N_PAIRS, save_random_lm

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none is visible here)")

HOOK = "blocks.1.hook_resid_post"


def study(folder):
    return ("model=hf", f"model.name={folder}", "model.device=cuda", f"data.n_pairs={N_PAIRS}",
            f"sae.hook={HOOK}", "sae.training_tokens=100000")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_random_lm(tmp_path_factory.mktemp("gpu") / "gpt_neox", "gpt_neox")


def test_scores_and_activations_on_the_gpu_match_the_cpus(lm):
    """The same weights give the same evaluation margins and SAE inputs on both devices (float32)."""
    from anatomy.data.synthetic import SyntheticData
    from anatomy.eval.scoring import score
    from anatomy.models.base import encode_batch
    from anatomy.models.hf import load_pretrained
    from anatomy.models.hooks import capture

    pairs = SyntheticData(n_pairs=N_PAIRS).load().heldout[:64]
    texts = [(p.prompt, p.chosen) for p in pairs]
    cpu, gpu = load_pretrained(str(lm), device="cpu"), load_pretrained(str(lm), device="cuda")
    assert next(gpu.model.parameters()).device.type == "cuda"
    on_cpu, on_gpu = score(cpu.model, cpu.tokenizer, texts, "dpo"), score(gpu.model, gpu.tokenizer, texts, "dpo")
    assert np.abs(on_cpu).min() > 10  # summed log-probs of whole responses: the tolerance below is tight
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-4, atol=1e-3)
    ids, mask, _, _ = encode_batch(cpu.tokenizer, texts, 256, True)
    act_cpu = capture(cpu.model, HOOK, ids, mask)
    act_gpu = capture(gpu.model, HOOK, ids.cuda(), mask.cuda())
    assert act_gpu.device.type == "cuda"
    torch.testing.assert_close(act_gpu.cpu(), act_cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("trainer,intervention,precision", [
    ("dpo", "feature_ablation", "bf16"),
    ("dpo", "feature_steering", "no"),
    ("reward_model", "data_reweighting", "bf16"),
])
def test_the_whole_loop_runs_on_the_gpu(tmp_path, lm, trainer, intervention, precision):
    audit, _ = run_study(tmp_path / "audit", *study(lm), *AUDIT)
    assert audit["audit/n_significant"] >= 3
    table = pd.read_csv(tmp_path / "audit" / "hypotheses.csv")
    strongest = table[table["significant"]].sort_values("q_value")["feature"].head(3).tolist()
    overrides = (*study(lm), f"select.block=[{','.join(map(str, strongest))}]", f"trainer={trainer}",
                 "trainer.max_steps=4", f"trainer.mixed_precision={precision}", f"intervention={intervention}")
    metrics, out = run_study(tmp_path / "run", *overrides)
    assert metrics["cache/sae"] == 1.0 and metrics["cache/features"] == 1.0  # the audit's, reused
    assert metrics["train/steps"] == 4.0 and np.isfinite(metrics["train/loss"])
    if intervention.startswith("feature_"):
        assert metrics["intervention/n_directions"] == 3
        assert 0 < metrics[f"intervention/edit_energy/{HOOK}"] < 1
    else:
        assert 0 < metrics["intervention/effective_sample_size"] <= metrics["train/pairs"]

    # The evaluation ran in float32 after training in bf16 (autocast taken off the policy and the
    # reference): the held-out margins it wrote are the saved float32 model's, scored anew here.
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from anatomy.eval.scoring import score

    heldout = pd.read_csv(out / "heldout.csv")
    assert metrics["eval/heldout_accuracy"] == pytest.approx(heldout["correct"].mean())
    cls = AutoModelForCausalLM if trainer == "dpo" else AutoModelForSequenceClassification
    saved = cls.from_pretrained(out / "model").cuda().eval()
    assert all(p.dtype == torch.float32 for p in saved.parameters())
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    cfg = compose(*overrides).eval
    chosen, rejected = list(zip(heldout["prompt"], heldout["chosen"])), list(zip(heldout["prompt"], heldout["rejected"]))

    def margins(model):
        return (score(model, tokenizer, chosen, trainer, cfg.max_length, cfg.batch_size)
                - score(model, tokenizer, rejected, trainer, cfg.max_length, cfg.batch_size))

    expected = margins(saved)
    if trainer == "dpo":  # the implicit reward: less the reference's margin
        expected -= margins(AutoModelForCausalLM.from_pretrained(lm).cuda().eval())
    np.testing.assert_allclose(heldout["margin"], expected, rtol=1e-4, atol=2e-3)
