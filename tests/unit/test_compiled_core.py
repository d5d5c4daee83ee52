"""The choice between the compiled domain core and its source (services/compiled_core.py,
docs/decisions.md "The compiled core"): a build is used only for the sources it was built
from, UNIFIER_CORE=compiled never falls back silently, and a process running compiled
runs every domain module compiled — and the projection's compiled modules with them
(issue 14, session 11: one build, one digest, never half compiled)."""

from __future__ import annotations

import importlib
import json
import os
import re
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


def test_a_compiled_projection_module_is_in_the_digest_and_the_others_are_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """One build, one digest: an edited `COMPILED` module makes the whole build stale
    (domain included); the projection's asyncpg modules are not compiled, not digested."""
    fake = tmp_path / "services" / "projection"
    fake.mkdir(parents=True)
    for name in (*compiled_core.COMPILED["projection"], "__init__.py", "batch.py"):
        (fake / name).write_text("x = 1\n")
    for package in ("store", "relay"):
        (tmp_path / "services" / package).mkdir()
        for name in compiled_core.COMPILED[package]:
            (tmp_path / "services" / package / name).write_text("x = 1\n")
    for package, names in compiled_core.EXTENSIONS.items():
        (tmp_path / "services" / package).mkdir(exist_ok=True)
        for name in names:
            (tmp_path / "services" / package / name).write_text("x = 1\n")
    monkeypatch.setattr(compiled_core, "SERVICES", tmp_path / "services")
    before = compiled_core.source_digest()
    for name in ("__init__.py", "batch.py"):
        (fake / name).write_text("x = 2\n")
    assert compiled_core.source_digest() == before
    (fake / "facts.py").write_text("x = 2\n")
    assert compiled_core.source_digest() != before


def test_an_edited_c_extension_makes_the_build_stale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """issue 14, session 17: the C encoder of the COPY payloads (`EXTENSIONS`) is in the
    build's digest: an edited `_rowcodec.c` (or session 19's `_native.c`) must not run
    as its stale self."""
    for package, names in (*compiled_core.COMPILED.items(), *compiled_core.EXTENSIONS.items()):
        (tmp_path / "services" / package).mkdir(parents=True, exist_ok=True)
        for name in names:
            (tmp_path / "services" / package / name).write_text("x = 1\n")
    monkeypatch.setattr(compiled_core, "SERVICES", tmp_path / "services")
    monkeypatch.setattr(compiled_core, "DOMAIN", tmp_path / "services" / "domain")
    for package, names in compiled_core.EXTENSIONS.items():  # session 19: the domain's _native.c too
        for name in names:
            before = compiled_core.source_digest()
            (tmp_path / "services" / package / name).write_text("x = 2\n")
            assert compiled_core.source_digest() != before, name


def test_a_package_follows_the_domains_choice(core_dir: Path) -> None:
    """services.projection's compiled modules come from the domain's build exactly when
    the domain's do: a compiled module calls the compiled domain directly."""
    path = ["/src/services/projection"]
    compiled_core.follow(path, "services.projection", "interpreted")
    assert path == ["/src/services/projection"]
    compiled_core.follow(path, "services.projection", "compiled")
    assert path == [str(core_dir / "services" / "projection"), "/src/services/projection"]


def test_make_core_is_rebuilt_when_any_compiled_source_changes() -> None:
    """The Makefile's `core` target depends on every compiled source (else an edited
    projection module would leave `make core` content with a build that no longer runs)."""
    makefile = (compiled_core.ROOT / "Makefile").read_text().replace("\\\n", " ")
    sources = re.search(r"^CORE_SOURCES :=(.*)$", makefile, re.M)
    assert sources is not None and re.search(r"^\$\(CORE\):.*\$\(CORE_SOURCES\)", makefile, re.M)
    listed = sources.group(1)
    assert "$(wildcard services/domain/*.py)" in listed
    projection = re.search(r"\$\(addprefix services/projection/,([^)]*)\)", listed)
    assert projection is not None and sorted(projection.group(1).split()) == sorted(compiled_core.COMPILED["projection"])
    for package in ("store", "relay"):
        for name in compiled_core.COMPILED[package]:
            assert f"services/{package}/{name}" in listed.split()
    assert set(compiled_core.COMPILED) == {"projection", "store", "relay"}  # a new package: list it above
    for package, names in compiled_core.EXTENSIONS.items():  # issue 14, session 17: the C extensions too
        for name in names:
            assert f"services/{package}/{name}" in listed.split()


def test_this_process_runs_the_core_it_was_asked_for() -> None:
    """CI sets UNIFIER_CORE=compiled (and `make test`'s second pass interpreted): every
    domain module and every compiled projection module then comes from the build, none
    from its source, or all from source; the projection's other modules from source."""
    import services.domain.core  # noqa: F401  (loads the whole core)
    import services.projection.batch  # noqa: F401  (imports every compiled module)

    asked = os.environ.get("UNIFIER_CORE", "auto")
    if asked != "auto":
        assert domain.CORE == asked
    loaded = {name: m.__file__ for name, m in sys.modules.items() if name.startswith("services.domain.")}
    # The domain's C writer (issue 14, session 19) is loaded exactly when the core is compiled.
    writer = loaded.pop("services.domain._native", None)
    assert (writer is not None) == (domain.CORE == "compiled")
    assert len(loaded) == len([m for m in compiled_core.modules() if m.startswith("services.domain.")])
    loaded |= {name: importlib.import_module(name).__file__ for name in compiled_core.modules()}
    suffix = ".so" if domain.CORE == "compiled" else ".py"
    assert all(str(f).endswith(suffix) for f in loaded.values()), loaded
    assert str(sys.modules["services.projection.batch"].__file__).endswith(".py")
    assert str(sys.modules["services.store.repository"].__file__).endswith(".py")
    # The COPY payloads' C encoder runs exactly when the compiled core does (issue 14,
    # session 17): its Python reference otherwise.
    from services.store import rowcodec

    assert rowcodec.NATIVE == (domain.CORE == "compiled")
