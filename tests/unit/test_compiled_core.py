"""The choice between the compiled domain core and its source (services/compiled_core.py,
docs/decisions.md "The compiled core"): a build is used only for the sources it was built
from, UNIFIER_CORE=compiled never falls back silently, and a process running compiled
runs every domain module compiled."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import services.domain as domain
from services import compiled_core


@pytest.fixture
def core_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty build directory in place of build/core; sys.path restored afterwards."""
    monkeypatch.setenv("UNIFIER_CORE_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


def _manifest(core_dir: Path, digest: str) -> None:
    (core_dir / compiled_core.MANIFEST).write_text(json.dumps({"digest": digest}))


def test_a_build_of_these_sources_goes_first_on_the_package_path(core_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIFIER_CORE", "auto")
    _manifest(core_dir, compiled_core.source_digest())
    path = ["/src/services/domain"]
    assert compiled_core.choose(path) == "compiled"
    assert path == [str(core_dir / "services" / "domain"), "/src/services/domain"]
    assert str(core_dir) in sys.path  # where the modules' shared library is imported from


@pytest.mark.parametrize("manifest", ["other sources", None, "unreadable"])
def test_a_stale_or_missing_build_runs_the_source_and_says_why(
    core_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, manifest: str | None,
) -> None:
    """An edited domain source must never run as its stale compiled self."""
    monkeypatch.setenv("UNIFIER_CORE", "auto")
    if manifest == "unreadable":
        (core_dir / compiled_core.MANIFEST).write_text("{")
    elif manifest is not None:
        _manifest(core_dir, "0" * 64)
    path = ["/src/services/domain"]
    assert compiled_core.choose(path) == "interpreted"
    assert path == ["/src/services/domain"]
    assert "domain core: interpreted" in caplog.text and str(core_dir) in caplog.text


def test_a_source_changed_after_the_build_invalidates_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The digest covers every compiled module byte for byte (and only them: __init__ chooses)."""
    fake = tmp_path / "services" / "domain"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("x = 1\n")
    (fake / "user.py").write_text("x = 1\n")
    monkeypatch.setattr(compiled_core, "DOMAIN", fake)
    before = compiled_core.source_digest()
    (fake / "__init__.py").write_text("x = 2\n")
    assert compiled_core.source_digest() == before
    (fake / "user.py").write_text("x = 2\n")
    assert compiled_core.source_digest() != before


def test_unifier_core_compiled_refuses_to_fall_back(core_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIFIER_CORE", "compiled")
    with pytest.raises(ImportError, match="UNIFIER_CORE=compiled but no compiled core in"):
        compiled_core.choose([])


def test_unifier_core_interpreted_ignores_a_valid_build(core_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIFIER_CORE", "interpreted")
    _manifest(core_dir, compiled_core.source_digest())
    path: list[str] = []
    assert compiled_core.choose(path) == "interpreted" and path == []


def test_an_unknown_unifier_core_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIFIER_CORE", "fast")
    with pytest.raises(ImportError, match="UNIFIER_CORE must be one of auto, compiled, interpreted"):
        compiled_core.choose([])


def test_this_process_runs_the_core_it_was_asked_for() -> None:
    """CI sets UNIFIER_CORE=compiled (and `make test`'s second pass interpreted): every
    domain module then comes from the build, none from its source, or all from source."""
    import services.domain.core  # noqa: F401  (loads the whole core)

    asked = os.environ.get("UNIFIER_CORE", "auto")
    if asked != "auto":
        assert domain.CORE == asked
    loaded = {name: m.__file__ for name, m in sys.modules.items() if name.startswith("services.domain.")}
    assert len(loaded) == len(compiled_core.sources())
    suffix = ".so" if domain.CORE == "compiled" else ".py"
    assert all(str(f).endswith(suffix) for f in loaded.values()), loaded
