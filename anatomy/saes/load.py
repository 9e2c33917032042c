"""SAEs that already exist: the sae-lens pretrained registry (needs the hub) or a local folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from anatomy.errors import AnatomyError
from anatomy.models.base import LoadedModel, ModelSpec
from anatomy.saes.base import LoadedSAE, check_sae


@dataclass
class PretrainedSAE:
    """`SAE.from_pretrained(release, sae_id)` from the sae-lens registry (e.g. gpt2-small-res-jb)."""

    release: str = "pythia-70m-deduped-res-sm"  # sae-lens release name
    sae_id: str = "blocks.3.hook_resid_post"  # SAE id within the release
    hook: str | None = None  # override the SAE's own hook name (None: use the SAE's metadata)

    def check(self, spec: ModelSpec) -> None:
        """Checked after loading (the registry entry is read from the hub)."""

    def load(self, model: LoadedModel, texts, model_key: str) -> tuple[LoadedSAE, bool]:
        from sae_lens import SAE

        sae = SAE.from_pretrained(self.release, self.sae_id, device=str(model.model.device))
        hook = self.hook or sae.cfg.metadata.hook_name
        hook = check_sae(model.spec, hook, sae.cfg.d_in, f"sae {self.release}/{self.sae_id}")
        return LoadedSAE(sae, hook, sae.cfg.d_in, sae.cfg.d_sae, f"{self.release}/{self.sae_id}"), False


@dataclass
class LocalSAE:
    """A folder written by sae-lens (`save_inference_model` / `save_model`): cfg.json + weights."""

    path: str = "???"  # the SAE folder
    hook: str | None = None  # override the SAE's own hook name (None: use cfg.json's metadata)

    def _cfg(self) -> dict:
        cfg_file = Path(self.path) / "cfg.json"
        if not cfg_file.exists():
            raise AnatomyError(f"sae.path={self.path!r}: no sae-lens cfg.json there")
        try:
            cfg = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as err:
            raise AnatomyError(f"sae.path={self.path!r}: cfg.json does not parse: {err}") from err
        if not isinstance(cfg, dict) or "d_in" not in cfg:
            raise AnatomyError(f"sae.path={self.path!r}: cfg.json has no d_in (not an SAE saved by sae-lens?)")
        return cfg

    def _hook(self, cfg: dict) -> str:
        metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
        hook = self.hook or metadata.get("hook_name") or cfg.get("hook_name")
        if not hook:
            raise AnatomyError(f"sae.path={self.path!r}: cfg.json names no hook; set sae.hook")
        return hook

    def check(self, spec: ModelSpec) -> None:
        """Reads only cfg.json: the hook must exist and d_in must equal the model's width."""
        cfg = self._cfg()
        check_sae(spec, self._hook(cfg), int(cfg["d_in"]), f"sae.path={self.path!r}")

    def load(self, model: LoadedModel, texts, model_key: str) -> tuple[LoadedSAE, bool]:
        from sae_lens import SAE

        cfg = self._cfg()
        hook = check_sae(model.spec, self._hook(cfg), int(cfg["d_in"]), f"sae.path={self.path!r}")
        sae = SAE.load_from_disk(self.path, device=str(model.model.device))
        return LoadedSAE(sae, hook, sae.cfg.d_in, sae.cfg.d_sae, self.path), False
