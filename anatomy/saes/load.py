"""SAEs that already exist: the sae-lens pretrained registry (needs the hub) or a local folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from anatomy.cache import folder_digest, hub_commit
from anatomy.errors import AnatomyError
from anatomy.models.base import LoadedModel, ModelSpec
from anatomy.saes.base import LoadedSAE, check_sae


def config_hook(cfg: dict, override: str | None, where: str) -> str:
    """The hook an SAE's config names (sae-lens 6 keeps it in its metadata), unless `sae.hook` overrides it."""
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    hook = override or metadata.get("hook_name") or cfg.get("hook_name")
    if not hook:
        raise AnatomyError(f"{where} names no hook; set sae.hook")
    return hook


@dataclass
class PretrainedSAE:
    """`SAE.from_pretrained(release, sae_id)` from the sae-lens registry (e.g. gpt2-small-res-jb)."""

    release: str = "pythia-70m-deduped-res-sm"  # sae-lens release name
    sae_id: str = "blocks.3.hook_resid_post"  # SAE id within the release
    hook: str | None = None  # override the SAE's own hook name (None: use the SAE's metadata)

    def check(self, spec: ModelSpec) -> None:
        """Before the model loads: the SAE id against sae-lens's registry (shipped with sae-lens, no
        hub needed), then the SAE's config alone (its cfg.json, a few kB from the hub or its cache):
        the hook must exist in the model and d_in must equal the model's width."""
        release = self._registry_entry()
        if release is not None and self.sae_id not in release.saes_map:
            ids = sorted(release.saes_map)
            raise AnatomyError(f"sae.sae_id={self.sae_id!r} is not in sae-lens release {self.release!r}; its "
                               f"{len(ids)} SAE ids: {', '.join(ids[:6])}{', ...' if len(ids) > 6 else ''}")
        cfg = self._cfg()
        if cfg.get("d_in") is None:
            raise AnatomyError(f"{self._where()}: its config has no d_in; cannot check it against the model")
        check_sae(spec, config_hook(cfg, self.hook, f"{self._where()}: its config"), int(cfg["d_in"]), self._where())

    def _where(self) -> str:
        return f"sae.release={self.release!r} sae.sae_id={self.sae_id!r}"

    def _cfg(self) -> dict:
        """The SAE's config as sae-lens reads it for `SAE.from_pretrained` (which then finds it cached)."""
        from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

        try:
            return load_sae_config_from_huggingface(self.release, self.sae_id)
        except Exception as err:  # unknown release or repository, no network and nothing cached
            raise AnatomyError(f"{self._where()}: cannot read its config ({type(err).__name__}: {err}); check "
                               "the release and id, and that the hub is reachable or the SAE is cached") from err

    def load(self, model: LoadedModel, texts, model_key: str) -> tuple[LoadedSAE, bool]:
        from sae_lens import SAE

        try:
            sae = SAE.from_pretrained(self.release, self.sae_id, device=str(model.model.device))
        except Exception as err:  # unknown release, no network, a missing file on the hub: say which SAE
            raise AnatomyError(f"{self._where()}: cannot load ({type(err).__name__}: {err})") from err
        hook = self.hook or sae.cfg.metadata.hook_name
        hook = check_sae(model.spec, hook, sae.cfg.d_in, self._where())
        source = f"{self.release}/{self.sae_id}"
        return LoadedSAE(sae, hook, sae.cfg.d_in, sae.cfg.d_sae, source, f"{source}@{self._version()}"), False

    def _version(self) -> str:
        """sae-lens's version and the hub commit the SAE's files came from (the release's repository),
        for the features' key: a repository that moved on, or another sae-lens, is featurized anew."""
        import sae_lens

        release = self._registry_entry()
        return f"{sae_lens.__version__}:{hub_commit(release.repo_id if release else self.release, None)}"

    def _registry_entry(self):
        """The release's entry in sae-lens's registry (shipped with sae-lens, cached by it), or None:
        not a registry release (sae-lens also takes a hub repo id), or another sae-lens layout."""
        try:
            from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
        except ImportError:
            return None
        return get_pretrained_saes_directory().get(self.release)


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
        return config_hook(cfg, self.hook, f"sae.path={self.path!r}: cfg.json")

    def check(self, spec: ModelSpec) -> None:
        """Reads only cfg.json: the hook must exist and d_in must equal the model's width."""
        cfg = self._cfg()
        check_sae(spec, self._hook(cfg), int(cfg["d_in"]), f"sae.path={self.path!r}")

    def load(self, model: LoadedModel, texts, model_key: str) -> tuple[LoadedSAE, bool]:
        from sae_lens import SAE

        cfg = self._cfg()
        hook = check_sae(model.spec, self._hook(cfg), int(cfg["d_in"]), f"sae.path={self.path!r}")
        sae = SAE.load_from_disk(self.path, device=str(model.model.device))
        key = f"{self.path}@{folder_digest(self.path)}"  # its files, not only its path: saved over, it keys anew
        return LoadedSAE(sae, hook, sae.cfg.d_in, sae.cfg.d_sae, self.path, key), False
