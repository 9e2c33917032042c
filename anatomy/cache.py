"""Content-addressed stage cache: one folder per (stage, hash of exactly what determines it).

Entries are built in a temporary folder and renamed into place, under a file lock, so parallel
jobs neither corrupt nor duplicate an entry and a killed job leaves no half-written one.
The root is `$ANATOMY_CACHE` (default `~/.cache/anatomy`); clear it with `rm -rf` of that folder.
`ANATOMY_NO_CACHE=1` computes every stage afresh in a temporary folder (the baseline of benchmarks),
removed when the process exits, or by the next such run if it was killed.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from anatomy import __version__


def cache_root() -> Path:
    return Path(os.environ.get("ANATOMY_CACHE", Path.home() / ".cache" / "anatomy")).expanduser()


def digest(key: object) -> str:
    """A stable hash of a JSON-able key (the package version is always part of it)."""
    blob = json.dumps({"key": key, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def texts_digest(texts: list[tuple[str, str]]) -> str:
    """A stable hash of (prompt, response) texts: the corpus part of a model's or an SAE's key."""
    return hashlib.sha256("\0".join(p + "\1" + r for p, r in texts).encode()).hexdigest()


def folder_digest(folder: str | Path) -> str:
    """A stable hash of a user's folder (a model or an SAE read by path): its resolved path and each
    file's name, size and modification time, so a folder saved over in place keys anew."""
    folder = Path(folder).resolve()
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps({"folder": str(folder), "files": files}).encode()).hexdigest()[:16]


def hub_commit(name: str, revision: str | None) -> str | None:
    """The commit a hub repository's files were loaded from (a model's, or an SAE's): the local hub
    cache's ref for the revision (a revision that is already a commit has no ref, and is its own
    answer); None for a local folder."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    if Path(name).is_dir():  # a local folder: no hub commit
        return None
    try:
        repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=name, repo_type="model")
    except ValueError:  # not a repository id (its load fails on its own terms)
        return revision
    ref = repo / "refs" / (revision or "main")
    return ref.read_text().strip() if ref.is_file() else revision


def versions(*packages: str) -> dict[str, str]:
    """The installed versions of `packages`: in the key of an entry whose numbers they compute."""
    from importlib.metadata import version

    return {name: version(name) for name in packages}


def code_digest(*modules) -> str:
    """A stable hash of modules' source: in the key of an entry whose content those modules compute,
    so an entry computed by other code is never served."""
    import inspect

    return hashlib.sha256("\0".join(inspect.getsource(m) for m in modules).encode()).hexdigest()[:20]


def code_closure(*modules: ModuleType) -> list[ModuleType]:
    """The given modules and every `anatomy` module they use, transitively (a module, function or
    class of the package bound at module level; imports inside functions are not followed), sorted
    by name: the code behind a stage."""
    seen: dict[str, ModuleType] = {}
    stack = list(modules)
    while stack:
        module = stack.pop()
        if module.__name__ in seen:
            continue
        seen[module.__name__] = module
        for value in vars(module).values():
            name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
            if isinstance(name, str) and name.split(".")[0] == "anatomy" and name not in seen and name in sys.modules:
                stack.append(sys.modules[name])
    return [seen[name] for name in sorted(seen)]


def stage_code(*names: str) -> str:
    """`code_digest` of the `code_closure` of the modules named (a module's `__name__`, a stage's
    `type(stage).__module__`): the `code` part of a stage's key."""
    from importlib import import_module

    return code_digest(*code_closure(*(import_module(name) for name in names)))


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


NO_CACHE_PREFIX = "anatomy-no-cache-"  # + the process id: the folder of its ANATOMY_NO_CACHE stages
_no_cache: Path | None = None  # this process's, once made


def _no_cache_root() -> Path:
    """This process's folder for `ANATOMY_NO_CACHE` stages, removed when it exits. Made once, after
    removing those of processes that no longer run: a killed one (SIGKILL, or a SIGTERM that Python
    did not turn into an exit) never ran its removal."""
    global _no_cache
    root = Path(tempfile.gettempdir()) / f"{NO_CACHE_PREFIX}{os.getpid()}"
    if _no_cache != root:
        for orphan in root.parent.glob(f"{NO_CACHE_PREFIX}*"):  # (one named by this pid is an earlier process's)
            pid = orphan.name[len(NO_CACHE_PREFIX):]
            if pid.isdigit() and orphan.is_dir() and (orphan == root or not _alive(int(pid))):
                shutil.rmtree(orphan, ignore_errors=True)
        root.mkdir()
        atexit.register(shutil.rmtree, root, ignore_errors=True)  # read until the process ends, then gone
        _no_cache = root
    return root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (another user's)
        return True
    return True


def cached_dir(stage: str, key: object, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return (folder, hit): the entry for `key`, built by `build(tmp_folder)` if absent."""
    if os.environ.get("ANATOMY_NO_CACHE"):  # every stage computed afresh (benchmarks, debugging)
        folder = Path(tempfile.mkdtemp(prefix=f"{stage}-", dir=_no_cache_root()))
        build(folder)
        return folder, False
    root = cache_root() / stage
    name = digest(key)
    final = root / name
    if (final / ".complete").exists():
        return final, True
    with _locked(root / f"{name}.lock"):
        if (final / ".complete").exists():
            return final, True
        tmp = root / f".tmp-{name}-{os.getpid()}"
        for stale in root.glob(f".tmp-{name}-*"):  # (a killed build's: under the lock, nothing else builds it)
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            (tmp / "key.json").write_text(json.dumps(key, indent=2, sort_keys=True, default=str))
            (tmp / ".complete").touch()
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final, False
