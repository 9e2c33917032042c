"""`model.device`: parsed when the config is built, checked against this machine before any weight loads.

No GPU is needed: `torch.cuda` is replaced by what a machine with GPUs would answer."""

from __future__ import annotations

import logging

import pytest
import torch

from anatomy.errors import AnatomyError
from anatomy.models.base import check_device
from anatomy.models.hf import HFModel


@pytest.fixture
def gpus(monkeypatch):
    """Pretend `n` CUDA devices are visible."""
    def visible(n: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return visible


def test_a_device_torch_does_not_know_is_an_error_when_the_config_is_built():
    with pytest.raises(AnatomyError, match=r"model.device='gpu' is not a torch device \(cpu, cuda, cuda:1, mps\)"):
        HFModel(device="gpu")


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_an_error(gpus, device):
    gpus(0)
    with pytest.raises(AnatomyError, match=f"model.device='{device}': CUDA is not available here.*model.device=cpu"):
        check_device(device, trains=False)


def test_a_gpu_index_that_is_not_visible_is_an_error(gpus):
    gpus(2)
    with pytest.raises(AnatomyError, match=r"only 2 CUDA device\(s\) are visible \(cuda:0..cuda:1\)"):
        check_device("cuda:2", trains=False)


def test_training_on_a_gpu_other_than_the_first_is_an_error_naming_the_fix(gpus):
    # HF's Trainer would move the policy to cuda:0 (and its reference would stay on cuda:1).
    gpus(2)
    with pytest.raises(AnatomyError, match="CUDA_VISIBLE_DEVICES=1 and model.device=cuda"):
        check_device("cuda:1", trains=True)
    check_device("cuda:1", trains=False)  # the audit alone runs where the model is


def test_training_with_several_gpus_visible_warns_of_dataparallel(gpus, caplog):
    gpus(2)
    with caplog.at_level(logging.WARNING):
        check_device("cuda", trains=False)
        assert not caplog.records
        check_device("cuda", trains=True)
    assert "2 GPUs are visible" in caplog.text and "DataParallel" in caplog.text


def test_one_gpu_and_the_cpu_pass_quietly(gpus, caplog):
    gpus(1)
    with caplog.at_level(logging.WARNING):
        for device in ("cpu", "cuda", "cuda:0"):
            check_device(device, trains=True)
    assert not caplog.records


def test_the_sae_trains_on_the_models_device(monkeypatch, tmp_path):
    """sae=train hands sae-lens the model's device (a GPU user's SAE trains on the GPU), not the CPU.
    The meta device stands in for a GPU; the activations are faked, and training stops at the config."""
    import types

    import sae_lens.config

    from anatomy.models.base import LoadedModel, ModelSpec
    from anatomy.saes import train

    seen = {}

    class Stop(Exception):
        pass

    def config(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(train, "collect_activations", lambda *args: torch.randn(64, 16))
    monkeypatch.setattr(sae_lens.config, "SAETrainerConfig", config)
    model = LoadedModel(types.SimpleNamespace(device=torch.device("meta")), None, ModelSpec("m", 16, 2), "m")
    with pytest.raises(Stop):
        train.TrainSAE(hook="blocks.1.hook_resid_post").build(model, [("p", "r")], tmp_path)
    assert seen["device"] == "meta"


def test_position_limit_is_the_learned_tables_length_and_none_for_rotary_models():
    from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, OPTConfig,
                              OPTForCausalLM)

    from anatomy.models.base import position_limit

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=128, vocab_size=64))
    opt = OPTForCausalLM(OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                                   word_embed_proj_dim=32, max_position_embeddings=96, vocab_size=64))
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, max_position_embeddings=96, vocab_size=64))
    assert position_limit(gpt2) == 128 and position_limit(opt) == 96  # (OPT's table has 2 more rows: an offset)
    assert position_limit(neox) is None  # rotary: no table to index past
