"""`model=hf` end to end on local folders written with `save_pretrained`, as a user's hub model loads.

The default study's tiny LM is a Llama. These tests build random, untrained GPT-NeoX (Pythia's
architecture) and GPT-2 models with a BPE tokenizer trained on the synthetic texts, save them, and
run the whole loop through `HFModel` (`AutoModelForCausalLM.from_pretrained` on the folder): an SAE
trained at an attention or MLP output, a feature intervention inside TRL training, evaluation, and
the trained model saved. They check the plumbing on other architectures, not what is learned.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import AUDIT, run_study

N_PAIRS = 400


def save_random_lm(folder: Path, arch: str) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, OPTConfig, OPTForCausalLM

    from anatomy.data.synthetic import SyntheticData
    from anatomy.models.tiny import train_tokenizer

    data = SyntheticData(n_pairs=N_PAIRS).load()
    tokenizer = train_tokenizer([(p.prompt, r) for p in data.train for r in (p.chosen, p.rejected)], 1024)
    ids = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(0)
    if arch == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                 num_attention_heads=2, max_position_embeddings=256, **ids))
    elif arch == "opt":  # its layers hold the MLP's two linears themselves: no module for hook_mlp_out
        model = OPTForCausalLM(OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=2,
                                         word_embed_proj_dim=64, max_position_embeddings=256, **ids))
    else:
        model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=2, n_positions=256, **ids))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("arch,point,trainer,intervention", [
    ("gpt_neox", "mlp_out", "dpo", "feature_ablation"),
    ("gpt2", "attn_out", "reward_model", "feature_steering"),
])
def test_a_local_hf_model_runs_the_whole_loop(tmp_path, arch, point, trainer, intervention):
    folder = save_random_lm(tmp_path / arch, arch)
    hook = f"blocks.1.hook_{point}"
    study = ("model=hf", f"model.name={folder}", f"data.n_pairs={N_PAIRS}", f"sae.hook={hook}",
             "sae.training_tokens=100000")
    # As a user would: audit first, then block what the audit found (here its three strongest hypotheses).
    audit, out = run_study(tmp_path / "audit", *study, *AUDIT)
    header = (out / "hypotheses.md").read_text()
    assert f"model `{folder}`" in header and f"at `{hook}`" in header
    table = pd.read_csv(out / "hypotheses.csv")
    strongest = table[table["significant"]].sort_values("q_value")["feature"].head(3).tolist()
    assert len(strongest) == 3, "the audit of a random model found fewer than 3 significant features"
    metrics, out = run_study(tmp_path / "run", *study, f"select.block=[{','.join(map(str, strongest))}]",
                             f"trainer={trainer}", "trainer.max_steps=4", f"intervention={intervention}")
    assert metrics["cache/sae"] == 1.0 and metrics["cache/features"] == 1.0  # the audit's, reused
    assert metrics["intervention/n_directions"] == 3
    assert 0 < metrics[f"intervention/edit_energy/{hook}"] < 1
    assert metrics["train/steps"] == 4.0
    heldout = pd.read_csv(out / "heldout.csv")  # the accuracy is that of the margins it wrote, pair by pair
    assert len(heldout) == metrics["data/heldout"] and "eval/shift/markdown" in metrics
    assert metrics["eval/heldout_accuracy"] == pytest.approx(heldout["correct"].mean())
    assert ((heldout["margin"] > 0) == (heldout["correct"] == 1)).all()
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["model_type"] == arch
    assert saved["architectures"] == (["GPTNeoXForCausalLM"] if trainer == "dpo" else ["GPT2ForSequenceClassification"])


def test_a_folder_saved_over_with_new_weights_is_audited_anew(tmp_path):
    """The stage cache knows a local model by its files, not only its path: after the folder is saved
    over (a user's retrained checkpoint), the SAE and features are built again, not served stale."""
    folder = save_random_lm(tmp_path / "lm", "gpt_neox")
    study = ("model=hf", f"model.name={folder}", f"data.n_pairs={N_PAIRS}", "sae.hook=blocks.1.hook_resid_post",
             "sae.training_tokens=50000", *AUDIT)
    first, _ = run_study(tmp_path / "first", *study)
    again, _ = run_study(tmp_path / "again", *study)
    assert (again["cache/sae"], again["cache/features"]) == (1.0, 1.0)  # same weights: reused
    assert again["audit/n_significant"] == first["audit/n_significant"]

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    model.save_pretrained(folder)  # the same path, new weights
    retrained, _ = run_study(tmp_path / "retrained", *study)
    assert (retrained["cache/sae"], retrained["cache/features"]) == (0.0, 0.0)


def test_the_weights_key_follows_files_revision_commit_and_dtype(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from anatomy.models.hf import weights_key

    folder = tmp_path / "lm"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"0" * 10)
    key = weights_key(str(folder), None, "float32")
    assert key == weights_key(str(folder), None, "float32")
    assert key != weights_key(str(folder), None, "bfloat16")
    (folder / "model.safetensors").write_bytes(b"0" * 11)
    assert key != weights_key(str(folder), None, "float32")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    refs = tmp_path / "hub" / "models--org--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("abc")
    hub = weights_key("org/model", None, "float32")
    assert hub != weights_key("org/model", "v2", "float32")
    (refs / "main").write_text("def")  # the branch moved on
    assert hub != weights_key("org/model", None, "float32")


def test_a_hub_repository_is_known_by_the_commit_its_files_came_from(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from anatomy.cache import hub_commit

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    refs = tmp_path / "models--org--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("abc123\n")
    assert hub_commit("org/model", None) == "abc123"
    (refs / "main").write_text("def456\n")  # the branch moved on, and a new download followed it
    assert hub_commit("org/model", None) == "def456"
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert hub_commit("org/model", commit) == commit  # a commit has no ref: it is its own answer
    assert hub_commit("org/other", None) is None  # not in the cache
    assert hub_commit(str(tmp_path), None) is None  # a local folder
    assert hub_commit("not/a/repo id", "v1") == "v1"  # not a repository id: the revision asked for


def test_a_pretrained_sae_is_known_by_sae_lens_and_its_repositorys_commit(tmp_path, monkeypatch):
    import sae_lens
    from huggingface_hub import constants
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from anatomy.saes.load import PretrainedSAE

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    sae = PretrainedSAE()  # pythia-70m-deduped-res-sm, from the registry that ships with sae-lens
    repo = get_pretrained_saes_directory()[sae.release].repo_id
    refs = tmp_path / f"models--{repo.replace('/', '--')}" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("abc123")
    assert sae._version() == f"{sae_lens.__version__}:abc123"


def test_a_folder_with_a_config_but_no_weights_is_an_error_naming_the_keys(tmp_path):
    from transformers import GPT2Config

    from anatomy.errors import AnatomyError
    from anatomy.models.hf import load_pretrained, model_spec

    GPT2Config(n_embd=64, n_layer=2, n_head=2).save_pretrained(tmp_path)  # e.g. an interrupted copy
    assert model_spec(str(tmp_path)).d_model == 64  # the check before loading passes
    with pytest.raises(AnatomyError, match=r"cannot load its tokenizer or weights \(OSError: .*check model.name"):
        load_pretrained(str(tmp_path))


@pytest.mark.parametrize("overrides", [
    ("sae.hook=blocks.1.hook_mlp_out",),
    ("sae.hook=blocks.1.hook_resid_post", "trainer=dpo", "intervention=feature_ablation",
     "intervention.extra_hooks=[blocks.1.hook_mlp_out]", "select.block=[1]"),
])
def test_a_hook_point_the_models_layers_lack_fails_once_the_model_loads(tmp_path, monkeypatch, overrides):
    """OPT's layers have no MLP module, so hook_mlp_out cannot exist there: an error naming it as soon
    as the model loads, before an SAE is trained or the audit runs (the tripwire)."""
    from anatomy.errors import AnatomyError
    from anatomy.saes.train import TrainSAE

    def tripwire(*args, **kwargs):
        raise AssertionError("the SAE was trained: the hook point was not checked once the model loaded")

    monkeypatch.setattr(TrainSAE, "build", tripwire)
    folder = save_random_lm(tmp_path / "opt", "opt")
    with pytest.raises(AnatomyError, match="hook_mlp_out: OPTDecoderLayer has none of the attributes mlp, "):
        run_study(tmp_path / "run", "model=hf", f"model.name={folder}", f"data.n_pairs={N_PAIRS}", *overrides)


def test_lengths_beyond_a_models_learned_positions_fail_once_it_loads(tmp_path, monkeypatch):
    """GPT-2 reads at most n_positions tokens (256 here): a longer featurize.max_length would index past
    its position table mid-featurize. It is an error naming the key as soon as the model loads, before
    the SAE is trained (the tripwire)."""
    from anatomy.errors import AnatomyError
    from anatomy.saes.train import TrainSAE

    def tripwire(*args, **kwargs):
        raise AssertionError("the SAE was trained: the lengths were not checked once the model loaded")

    monkeypatch.setattr(TrainSAE, "build", tripwire)
    folder = save_random_lm(tmp_path / "gpt2", "gpt2")
    with pytest.raises(AnatomyError, match=r"featurize.max_length=512, eval.max_length=300: model .* has learned "
                                           r"position embeddings for 256 tokens.*set each to at most 256"):
        run_study(tmp_path / "run", "model=hf", f"model.name={folder}", f"data.n_pairs={N_PAIRS}",
                  "sae.hook=blocks.1.hook_resid_post", "featurize.max_length=512", "eval.max_length=300",
                  "trainer=dpo", "intervention=none")
