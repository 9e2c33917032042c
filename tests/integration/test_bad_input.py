"""Bad input fails early, with a message naming the problem, and before any model is built.

Every case runs the real pipeline (`run_study`) with a fresh, empty stage cache and with the model
and SAE loaders replaced by tripwires: an error that reaches them, or a `model/` / `sae/` entry in
the cache afterwards, means the check came too late. The last test runs the `anatomy` command
twice and checks that a failing run leaves an earlier run's folder untouched.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException

from anatomy.data.local import LocalData
from anatomy.errors import AnatomyError

from conftest import AUDIT, SMALL, run_study

GOOD = [{"prompt": f"prompt {i}", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"} for i in range(12)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty ANATOMY_CACHE for this test, and tripwires on every model / SAE loader."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("ANATOMY_CACHE", str(cache))

    def tripwire(what):
        def load(self, *args, **kwargs):
            raise AssertionError(f"{what} reached: the bad input was not caught before the model was built")
        return load

    from anatomy.models.hf import HFModel
    from anatomy.models.tiny import TinyModel
    from anatomy.saes.load import LocalSAE, PretrainedSAE
    from anatomy.saes.train import TrainSAE

    for cls in (TinyModel, HFModel):
        monkeypatch.setattr(cls, "load", tripwire(f"{cls.__name__}.load"))
    for cls in (TrainSAE, LocalSAE, PretrainedSAE):
        monkeypatch.setattr(cls, "load", tripwire(f"{cls.__name__}.load"))
    return cache


def fails(tmp_path: Path, cache: Path, *overrides: str, error=AnatomyError) -> str:
    """Run the study, expect `error`, check nothing was built or written; the message."""
    out = tmp_path / "run"
    with pytest.raises(error) as err:
        run_study(out, *overrides)
    built = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    assert "model" not in built and "sae" not in built, f"cache entries created before the error: {built}"
    assert not (out / "hypotheses.csv").exists() and not (out / "metrics.json").exists()
    return str(err.value)


# 1. a missing file --------------------------------------------------------------------------------


def test_missing_file(tmp_path, fresh_cache):
    missing = tmp_path / "nowhere" / "pairs.jsonl"
    msg = fails(tmp_path, fresh_cache, *AUDIT, "data=local", f"data.path={missing}")
    assert str(missing) in msg and "does not exist" in msg


def test_local_without_a_path_names_it(tmp_path, fresh_cache):
    msg = fails(tmp_path, fresh_cache, *AUDIT, "data=local")
    assert "data.path" in msg and "required" in msg


# 2. a file that does not parse --------------------------------------------------------------------


def test_broken_jsonl_names_the_line(tmp_path, fresh_cache):
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps(r) for r in GOOD]
    lines[2] = '{"prompt": "p", "chosen": "a", "rejected": '  # line 3, cut short
    path.write_text("\n".join(lines) + "\n")
    msg = fails(tmp_path, fresh_cache, *AUDIT, "data=local", f"data.path={path}")
    assert str(path) in msg and "line 3 does not parse as JSON" in msg


def test_broken_json_array(tmp_path, fresh_cache):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(GOOD)[:-5])
    msg = fails(tmp_path, fresh_cache, *AUDIT, "data=local", f"data.path={path}")
    assert str(path) in msg and "does not parse as JSON" in msg


def test_broken_parquet(tmp_path, fresh_cache):
    path = tmp_path / "pairs.parquet"
    path.write_bytes(b"PAR1" + b"\x00garbage, not a parquet footer" * 10 + b"PAR1")
    msg = fails(tmp_path, fresh_cache, *AUDIT, "data=local", f"data.path={path}")
    assert str(path) in msg and "does not parse as parquet" in msg


def test_csv_gz_that_is_not_gzip(tmp_path, fresh_cache):
    path = tmp_path / "pairs.csv.gz"
    path.write_text("prompt,chosen,rejected\np,a,b\n")
    msg = fails(tmp_path, fresh_cache, *AUDIT, "data=local", f"data.path={path}")
    assert str(path) in msg and "cannot read it" in msg and "gzip" in msg.lower()


def test_gzip_that_is_truncated(tmp_path, fresh_cache):
    path = tmp_path / "pairs.jsonl.gz"
    blob = gzip.compress("".join(json.dumps(r) + "\n" for r in GOOD).encode())
    path.write_bytes(blob[: len(blob) // 2])
    msg = fails(tmp_path, fresh_cache, *AUDIT, "data=local", f"data.path={path}")
    assert str(path) in msg and "cannot read it" in msg


# 3. a missing column -----------------------------------------------------------------------------


def test_missing_column_names_it(tmp_path, fresh_cache):
    rows = [{"prompt": r["prompt"], "answer": r["chosen"], "rejected": r["rejected"]} for r in GOOD]
    path = _jsonl(tmp_path / "pairs.jsonl", rows)
    msg = fails(tmp_path, fresh_cache, *AUDIT, "data=local", f"data.path={path}")
    assert "missing column(s) ['chosen']" in msg and "'answer'" in msg and "data.chosen_key" in msg


def test_renamed_columns_via_config_are_accepted(tmp_path, fresh_cache):
    # The fix the message suggests works: the data load, then the run stops at the (tripwired) model.
    rows = [{"prompt": r["prompt"], "answer": r["chosen"], "rejected": r["rejected"]} for r in GOOD]
    path = _jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(AssertionError, match="TinyModel.load reached"):
        run_study(tmp_path / "run", "data=local", f"data.path={path}", "data.chosen_key=answer", *AUDIT)


# 4. empty or non-string responses ----------------------------------------------------------------

BAD_ROWS = GOOD[:2] + [
    {"prompt": "p2", "chosen": "", "rejected": "b"},
    {"prompt": "p3", "chosen": "a", "rejected": 42},
    {"prompt": "p4", "chosen": None, "rejected": "b"},
] + GOOD[5:]


def test_empty_or_non_string_responses_name_the_rows(tmp_path, fresh_cache):
    path = _jsonl(tmp_path / "pairs.jsonl", BAD_ROWS)
    msg = fails(tmp_path, fresh_cache, *AUDIT, "data=local", f"data.path={path}")
    assert "3 invalid row(s)" in msg
    assert "row 2: chosen is empty" in msg
    assert "row 3: rejected is not a string (int)" in msg
    assert "row 4: chosen is null" in msg
    assert "data.drop_invalid=true" in msg


def test_drop_invalid_drops_and_counts(tmp_path):
    path = _jsonl(tmp_path / "pairs.jsonl", BAD_ROWS)
    data = LocalData(path=str(path), drop_invalid=True).load()
    pairs = data.train + data.heldout
    assert data.report["data/rows"] == 12.0
    assert data.report["data/dropped_invalid"] == 3.0
    assert data.report["data/dropped_identical"] == 0.0
    assert data.report["data/pairs"] == 9.0 and len(pairs) == 9
    assert {p.prompt for p in pairs} == {r["prompt"] for r in GOOD[:2] + GOOD[5:]}


# 5. chosen identical to rejected -----------------------------------------------------------------


def test_identical_pairs_are_dropped_and_counted(tmp_path):
    rows = GOOD + [{"prompt": f"same {i}", "chosen": "same text", "rejected": "same text"} for i in range(3)]
    path = _jsonl(tmp_path / "pairs.jsonl", rows)
    data = LocalData(path=str(path)).load()
    assert data.report["data/dropped_identical"] == 3.0
    assert data.report["data/rows"] == 15.0 and data.report["data/pairs"] == 12.0
    assert all(p.chosen != p.rejected for p in data.train + data.heldout)


def test_nothing_usable_left_is_an_error(tmp_path, fresh_cache):
    rows = [{"prompt": f"p{i}", "chosen": "same", "rejected": "same"} for i in range(4)]
    path = _jsonl(tmp_path / "pairs.jsonl", rows)
    msg = fails(tmp_path, fresh_cache, *AUDIT, "data=local", f"data.path={path}")
    assert "no usable pair left of 4 rows (4 with chosen identical to rejected, 0 invalid)" in msg


# 6. unknown options, unknown keys, bad values ----------------------------------------------------


def test_unknown_config_option(tmp_path, fresh_cache):
    msg = fails(tmp_path, fresh_cache, "data=nope", error=MissingConfigException)
    assert "data/nope" in msg and "synthetic" in msg  # names the option and lists the real ones


def test_unknown_key(tmp_path, fresh_cache):
    msg = fails(tmp_path, fresh_cache, "data.nonexistent_key=1", error=ConfigCompositionException)
    assert "data.nonexistent_key" in msg


@pytest.mark.parametrize(
    "override,names",
    [
        ("+hypothesis.alpah=0.1", ["hypothesis", "alpah"]),
        ("+data.n_pair=10", ["data", "n_pair"]),
        ("+featurize.polling=mean", ["featurize", "polling"]),
        ("+sae.expanson=8", ["sae", "expanson"]),
    ],
)
def test_misspelled_key_in_a_node(tmp_path, fresh_cache, override, names):
    msg = fails(tmp_path, fresh_cache, override)
    for name in names:
        assert name in msg


@pytest.mark.parametrize(
    "override,names",
    [
        ("hypothesis.correction=holm", ["correction", "holm", "bonferroni"]),
        ("hypothesis.test=ttest", ["test", "ttest", "wilcoxon"]),
        ("hypothesis.alpha=2", ["alpha"]),
        ("featurize.pooling=median", ["featurize.pooling", "median", "max"]),
        ("sae.architecture=gated", ["sae.architecture", "gated", "topk"]),
        ("data.n_pairs=3", ["data.n_pairs", "10"]),
        ("model.n_heads=3", ["model.d_model", "model.n_heads"]),
        ("trainer.mixed_precision=bf32", ["trainer.mixed_precision=bf32", "no, bf16 or fp16"]),
        ("trainer.mixed_precision=fp16", ["trainer.mixed_precision=fp16", "needs a GPU", "model.device=cpu"]),
        ("trainer.sft_weight=-0.5", ["trainer.sft_weight=-0.5", ">= 0"]),
    ],
)
def test_bad_value_names_the_field(tmp_path, fresh_cache, override, names):
    msg = fails(tmp_path, fresh_cache, override)
    for name in names:
        assert name in msg, (name, msg)


@pytest.mark.parametrize(
    "overrides,names",
    [
        (["intervention=feature_steering", "intervention.coefficient=abc"],
         ["intervention.coefficient", "a number", "'abc'"]),
        (["intervention.n_bins=4.5"], ["intervention.n_bins", "whole number", "4.5"]),
        (["intervention=data_filtering", "intervention.two_sided=yes"], ["intervention.two_sided", "true or false"]),
        (["data.rates.markdown=[0.6,high]"], ["data.rates.markdown[1]", "'high'"]),
        (["select.block=[key,1.5]"], ["select.block[1]", "1.5"]),
        (["trainer.max_steps=ten"], ["trainer.max_steps", "'ten'"]),
    ],
)
def test_wrong_type_names_the_field(tmp_path, fresh_cache, overrides, names):
    # Checked against each node's dataclass field types before anything is built, so the run does
    # not get as far as the intervention (after the whole audit) before `"abc" * 5.0` fails there.
    msg = fails(tmp_path, fresh_cache, *overrides)
    for name in names:
        assert name in msg, (name, msg)


def test_verdicts_typo_fails_before_the_audit(tmp_path, fresh_cache):
    verdicts = tmp_path / "verdicts.yaml"
    verdicts.write_text("12: block\n40: blok\n")
    msg = fails(tmp_path, fresh_cache, f"select.verdicts={verdicts}")
    assert "feature 40" in msg and "'blok'" in msg and "amplify" in msg


def test_verdicts_written_for_another_sae_are_refused_before_the_audit(tmp_path):
    # The small study's model and SAE, from the session's cache; the file names another SAE.
    verdicts = tmp_path / "verdicts.yaml"
    verdicts.write_text('sae: "0000000000000000"\n12: block\n')
    with pytest.raises(AnatomyError, match=r"written for another SAE \(its sae: 0000000000000000; this run's SAE: "):
        run_study(tmp_path / "run", *SMALL, "trainer=dpo", "intervention=data_reweighting", f"select.verdicts={verdicts}")
    assert not (tmp_path / "run" / "hypotheses.csv").exists()  # refused before the audit


# 7. an SAE that does not fit the model -----------------------------------------------------------


def _sae_folder(path: Path, d_in: int, hook: str) -> Path:
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=2 * d_in))
    sae.cfg.metadata.hook_name = hook
    # An inference SAE has `save_model`; `save_inference_model` exists only on training SAEs.
    save = getattr(sae, "save_inference_model", None) or sae.save_model
    save(path)
    assert json.loads((path / "cfg.json").read_text())["metadata"]["hook_name"] == hook
    return path


def test_sae_width_differs_from_the_model(tmp_path, fresh_cache):
    folder = _sae_folder(tmp_path / "sae64", 64, "blocks.1.hook_resid_post")
    msg = fails(tmp_path, fresh_cache, "sae=local", f"sae.path={folder}")
    assert "d_in=64" in msg and "width 128" in msg and "blocks.1.hook_resid_post" in msg


def test_sae_hook_outside_the_model(tmp_path, fresh_cache):
    folder = _sae_folder(tmp_path / "sae128", 128, "blocks.7.hook_resid_post")
    msg = fails(tmp_path, fresh_cache, "sae=local", f"sae.path={folder}")
    assert "layer 7 does not exist" in msg and "0..3" in msg


def test_sae_folder_without_cfg(tmp_path, fresh_cache):
    folder = tmp_path / "empty_sae"
    folder.mkdir()
    msg = fails(tmp_path, fresh_cache, "sae=local", f"sae.path={folder}")
    assert str(folder) in msg and "cfg.json" in msg


def test_sae_cfg_without_d_in(tmp_path, fresh_cache):
    folder = tmp_path / "sae_no_din"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps({"d_sae": 256, "metadata": {"hook_name": "blocks.1.hook_resid_post"}}))
    msg = fails(tmp_path, fresh_cache, "sae=local", f"sae.path={folder}")
    assert "d_in" in msg and str(folder) in msg


def test_pretrained_sae_id_not_in_its_release(tmp_path, fresh_cache):
    # sae-lens ships its registry, so this is known without the hub and before the model is built.
    msg = fails(tmp_path, fresh_cache, "sae=pretrained", "sae.sae_id=blocks.9.hook_resid_post")
    assert "sae.sae_id='blocks.9.hook_resid_post'" in msg and "pythia-70m-deduped-res-sm" in msg
    assert "blocks.3.hook_resid_post" in msg  # names ids the release does have


def _hub_sae_cfg(cache: Path, monkeypatch, cfg: dict | None) -> None:
    """An offline hub cache holding only pythia-70m-deduped-res-sm's blocks.3 cfg.json (or nothing)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    if cfg is not None:
        repo = cache / "models--ctigges--pythia-70m-deduped__res-sm_processed"
        folder = repo / "snapshots" / "abc123" / "3-res-sm"
        folder.mkdir(parents=True)
        (folder / "cfg.json").write_text(json.dumps(cfg))
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("abc123")


PYTHIA_SAE_CFG = {"d_in": 512, "d_sae": 32768, "hook_name": "blocks.3.hook_resid_post", "hook_layer": 3,
                  "model_name": "pythia-70m-deduped", "dtype": "float32", "device": "cpu"}


def test_a_pretrained_sae_for_another_models_width_fails_before_the_model_loads(tmp_path, fresh_cache, monkeypatch):
    # Only the SAE's cfg.json is read (cached here, a few kB from the hub for a user): its d_in
    # against the model's width, before the model, or the SAE's weights, load.
    _hub_sae_cfg(tmp_path / "hub", monkeypatch, {**PYTHIA_SAE_CFG, "hook_name": "blocks.1.hook_resid_post"})
    msg = fails(tmp_path, fresh_cache, "sae=pretrained")
    assert "sae.release='pythia-70m-deduped-res-sm' sae.sae_id='blocks.3.hook_resid_post'" in msg
    assert "d_in=512 differs from the model's width 128" in msg


def test_a_pretrained_sae_whose_hook_the_model_lacks_fails_before_the_model_loads(tmp_path, fresh_cache, monkeypatch):
    _hub_sae_cfg(tmp_path / "hub", monkeypatch, {**PYTHIA_SAE_CFG, "d_in": 128, "hook_name": "blocks.7.hook_resid_post"})
    msg = fails(tmp_path, fresh_cache, "sae=pretrained")
    assert "hook 'blocks.7.hook_resid_post': layer 7 does not exist; the model has layers 0..3" in msg


def test_a_pretrained_sae_whose_config_cannot_be_read_fails_before_the_model_loads(tmp_path, fresh_cache, monkeypatch):
    _hub_sae_cfg(tmp_path / "hub", monkeypatch, None)  # offline, nothing cached
    msg = fails(tmp_path, fresh_cache, "sae=pretrained")
    assert "sae.release='pythia-70m-deduped-res-sm' sae.sae_id='blocks.3.hook_resid_post': cannot read its config" in msg
    assert "the hub is reachable or the SAE is cached" in msg


def test_a_model_that_cannot_be_found_is_an_error_naming_the_keys(tmp_path, fresh_cache):
    # Offline, a hub id that is not cached reads the same as a folder that does not exist.
    msg = fails(tmp_path, fresh_cache, "model=hf", f"model.name={tmp_path / 'no-such-model'}")
    assert f"model '{tmp_path / 'no-such-model'}': cannot read its config" in msg
    assert "check model.name (a hub id or a local folder) and model.revision" in msg


def test_a_cuda_device_on_a_machine_without_one_fails_before_the_model_loads(tmp_path, fresh_cache, monkeypatch):
    from transformers import GPT2Config

    GPT2Config(n_embd=64, n_layer=2, n_head=2).save_pretrained(tmp_path / "lm")  # its config is all the check reads
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as here, also on a machine with a GPU
    msg = fails(tmp_path, fresh_cache, "model=hf", f"model.name={tmp_path / 'lm'}", "model.device=cuda",
                "sae.hook=blocks.1.hook_resid_post")
    assert "model.device='cuda': CUDA is not available here" in msg


# 8. hooks that do not exist ----------------------------------------------------------------------


def test_hook_layer_out_of_range(tmp_path, fresh_cache):
    msg = fails(tmp_path, fresh_cache, "sae.hook=blocks.9.hook_resid_post")
    assert "layer 9 does not exist" in msg and "layers 0..3" in msg


def test_hook_layer_out_of_range_for_a_smaller_model(tmp_path, fresh_cache):
    msg = fails(tmp_path, fresh_cache, "model.n_layers=2", "sae.hook=blocks.2.hook_resid_pre")
    assert "layer 2 does not exist" in msg and "layers 0..1" in msg


def test_unsupported_hook_name(tmp_path, fresh_cache):
    msg = fails(tmp_path, fresh_cache, "sae.hook=blocks.1.attn")
    assert "'blocks.1.attn'" in msg
    assert "blocks.L.hook_resid_pre" in msg and "blocks.L.hook_resid_post" in msg


def test_ablation_extra_hook_outside_the_model(tmp_path, fresh_cache):
    msg = fails(tmp_path, fresh_cache, *SMALL, "trainer=dpo", "intervention=feature_ablation",
                "intervention.extra_hooks=[blocks.7.hook_resid_post]")
    assert "layer 7 does not exist" in msg and "layers 0..3" in msg


# 9. a failing run overwrites nothing -------------------------------------------------------------


def _cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANATOMY_CACHE": os.environ["ANATOMY_CACHE"], "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "anatomy.cli", *overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )


def _run_folders(tmp_path: Path) -> set[Path]:
    return {p.parent for p in (tmp_path / "outputs").glob("*/*/.hydra")}


def test_a_top_level_key_of_the_wrong_type_is_a_message_not_a_traceback(tmp_path):
    bad = _cli(tmp_path, "seed=abc")
    assert bad.returncode == 1
    assert "config seed: expected a whole number (int), got 'abc'" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr


@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_a_folder_that_holds_an_earlier_run_is_refused_before_anything_is_written(tmp_path, mode):
    """`hydra.run.dir=` / `hydra.sweep.dir=` set by hand to an earlier run's folder: Hydra would
    overwrite that run's record (.hydra/) and the results would mix; the command refuses instead."""
    earlier = tmp_path / "earlier"
    record = {".hydra/config.yaml": "seed: 7\n", "metrics.json": '{"eval/heldout_accuracy": 0.9}\n'}
    if mode == "sweep":
        record = {"multirun.yaml": "hydra: {}\n", **{f"0/{name}": text for name, text in record.items()}}
    for name, text in record.items():
        (earlier / name).parent.mkdir(parents=True, exist_ok=True)
        (earlier / name).write_text(text)
    args = ("-m", "seed=0,1", f"hydra.sweep.dir={earlier}") if mode == "sweep" else (f"hydra.run.dir={earlier}",)
    done = _cli(tmp_path, *args)
    assert done.returncode == 1
    key, what = ("hydra.sweep.dir", "sweep (its multirun.yaml)") if mode == "sweep" else (
        "hydra.run.dir", "run (its .hydra)")
    assert f"{key}={earlier} already holds an earlier {what}" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    on_disk = {str(p.relative_to(earlier)): p.read_text() for p in earlier.rglob("*") if p.is_file()}
    assert on_disk == record  # nothing written, nothing changed (no anatomy.log, no new .hydra files)


@pytest.mark.slow
def test_failing_run_overwrites_nothing(tmp_path):
    # The same small study as tests/integration/test_audit.py: its model and SAE are built once.
    ok = _cli(tmp_path, *SMALL, *AUDIT)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    (first,) = _run_folders(tmp_path)
    files = ["hypotheses.csv", "metrics.json", ".hydra/config.yaml"]
    before = {name: (first / name).read_bytes() for name in files}
    assert json.loads(before["metrics.json"])["data/rows"] == 400.0

    bad = _cli(tmp_path, *AUDIT, "data=local", "data.path=missing.jsonl")
    assert bad.returncode == 1
    assert "data.path='missing.jsonl': file does not exist" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr  # bad input: the message, not a stack trace

    folders = _run_folders(tmp_path)
    assert len(folders) == 2, folders
    (second,) = folders - {first}
    assert {name: (first / name).read_bytes() for name in files} == before
    assert not (second / "hypotheses.csv").exists() and not (second / "metrics.json").exists()
    assert "Traceback" in (second / "error.txt").read_text()  # kept on disk, for a bug report
    assert "missing.jsonl" in (second / ".hydra" / "overrides.yaml").read_text()
