"""The stage cache's keys: an entry is reused for the same key only, and a key can name the code
that computes the entry (`code_digest`), so numbers measured by older code are never served."""

from __future__ import annotations

import types

from anatomy.cache import cached_dir, code_digest


def _module(name: str, source: str) -> types.ModuleType:
    import linecache

    path = f"<anatomy-test-{name}>"
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)  # what inspect reads
    module = types.ModuleType(name)
    module.__file__ = path
    return module


def test_code_digest_follows_the_source():
    a, same, edited = _module("a", "X = 1\n"), _module("b", "X = 1\n"), _module("c", "X = 2\n")
    assert code_digest(a) == code_digest(same)
    assert code_digest(a) != code_digest(edited)
    assert code_digest(a, edited) != code_digest(edited, a)  # order is part of it


def test_an_entry_keyed_by_other_code_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("ANATOMY_CACHE", str(tmp_path))
    monkeypatch.delenv("ANATOMY_NO_CACHE", raising=False)
    builds = []

    def build(folder):
        builds.append(folder)
        (folder / "value").write_text(str(len(builds)))

    old, new = _module("m1", "def f(): return 1\n"), _module("m2", "def f(): return 2\n")
    first, hit1 = cached_dir("stage", {"x": 1, "code": code_digest(old)}, build)
    again, hit2 = cached_dir("stage", {"x": 1, "code": code_digest(old)}, build)
    other, hit3 = cached_dir("stage", {"x": 1, "code": code_digest(new)}, build)
    assert (hit1, hit2, hit3) == (False, True, False) and len(builds) == 2
    assert first == again != other and (other / "value").read_text() == "2"
