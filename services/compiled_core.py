"""The domain core compiled by mypyc, and the choice between it and the Python source.

`services/domain` is pure, fully annotated Python checked by mypy; mypyc (shipped with
mypy) turns it into a C extension that applies facts 1.3–1.7× as fast
(docs/decisions.md, "The compiled core"). Same source, same rules: the extension is the
source compiled, and the unit tests pass on both (`make test` runs them once more on
the interpreted core).

The extension is built out of the source tree (`make core`: `python -m
services.compiled_core build`, into `build/core/`), never beside the `.py` files:
Python prefers an extension module to a source file, so an edited source would
silently run as its stale compiled self. The build records a digest of the sources it
compiled; `services.domain` loads the extension only while the sources still have that
digest, and otherwise runs the source and says why.

UNIFIER_CORE chooses, in every process (a projection's child processes inherit it):
- `auto` (the default): the compiled core when a build matches the sources, else the
  source, with a warning;
- `compiled`: the compiled core or an error (CI, production images);
- `interpreted`: always the source (the tests' second pass; debugging with pdb).
It is read from the environment at import, not from the service's settings: which code
a process runs is decided before any setting is loaded.

The build also holds the live projection's synchronous hot modules (`COMPILED`: the
records' parsing, the facts' keys and the loop around the core, the resident users, the
co-partition merge, the users' rows for the statements), compiled in the same group as
the domain: one shared library, one digest over every compiled source. A compiled module
calls the domain's compiled functions and reads its classes' attributes directly, so the
packages run compiled together or interpreted together, never half and half:
`services.projection`, `services.store` and `services.relay` follow the choice `services.domain` made
(`follow`).

The build also holds the few hand-written C extensions (`EXTENSIONS`: the binary COPY
encoder of the batch's rows, services/store/_rowcodec.c), compiled beside the mypyc
modules into the same package directories and covered by the same digest: a process
running compiled finds them first on its packages' paths; an interpreted one never sees
them and runs their Python reference (services/store/rowcodec.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent  # holds services/ (the repository, or site-packages)
DOMAIN = ROOT / "services" / "domain"
SERVICES = ROOT / "services"
# Modules of other packages compiled with the domain, by package: synchronous, pure, fully
# annotated (no asyncpg in them). Each package's `__init__` calls `follow`; the
# Makefile's `core` target lists them too (tests/unit/test_compiled_core.py checks both).
COMPILED = {
    "projection": ("decoding.py", "facts.py", "merge.py", "records.py", "resident.py", "window.py"),
    "store": ("rows.py",),
    "relay": ("partitioner.py",),  # murmur2 of every new user's key (issue 14, session 12)
}
# Hand-written C extensions built with them, by package: each `<name>.c` becomes the
# module `services.<package>.<name>` (the Makefile's `core` target lists them too).
EXTENSIONS = {
    "domain": ("_native.c",),  # a user's state and user-changed message as JSON (issue 14, session 19)
    "store": ("_rowcodec.c",),  # rows as binary COPY payloads (issue 14, session 17)
}
GROUP = "unifier_core"  # the shared library's name: unifier_core__mypyc.<abi>.so
MANIFEST = "MANIFEST.json"
MODES = ("auto", "compiled", "interpreted")


def core_dir() -> Path:
    """Where the compiled core is built and looked for (UNIFIER_CORE_DIR overrides)."""
    return Path(os.environ.get("UNIFIER_CORE_DIR") or ROOT / "build" / "core")


def sources() -> list[Path]:
    """The modules compiled: the whole domain but its `__init__`, which chooses, and
    the `COMPILED` modules of other packages."""
    domain = sorted(p for p in DOMAIN.glob("*.py") if p.name != "__init__.py")
    return domain + [SERVICES / package / name for package, names in COMPILED.items() for name in names]


def c_sources() -> list[Path]:
    """The `EXTENSIONS`' C files."""
    return [SERVICES / package / name for package, names in EXTENSIONS.items() for name in names]


def modules() -> list[str]:
    """The compiled modules' names, as imported: services.domain.user, …"""
    return [f"services.{p.parent.name}.{p.stem}" for p in sources()]


def source_digest() -> str:
    """What a build is valid for: every compiled source and C extension's source, byte
    for byte (named by its package and file), and the Python ABI the extension was
    built against."""
    h = hashlib.sha256(sys.implementation.cache_tag.encode())
    for path in sources() + c_sources():
        h.update(b"\0" + f"{path.parent.name}/{path.name}".encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _mismatch(out: Path) -> str | None:
    """Why the build in `out` cannot be used, or None when it can."""
    try:
        built = json.loads((out / MANIFEST).read_text())["digest"]
    except FileNotFoundError:
        return f"no compiled core in {out} (`make core` builds it)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable {out / MANIFEST}: {err}"
    if built != source_digest():
        return f"the compiled core in {out} was built from other sources (`make core` rebuilds it)"
    return None


def choose(package_path: list[str]) -> str:
    """Called by `services/domain/__init__.py` with its `__path__`: put the compiled
    modules first on it when UNIFIER_CORE allows and a matching build exists. Returns
    "compiled" or "interpreted" (`services.domain.CORE`)."""
    mode = os.environ.get("UNIFIER_CORE", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ImportError(f"UNIFIER_CORE must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "interpreted":
        return "interpreted"
    out = core_dir()
    why = _mismatch(out)
    if why is not None:
        if mode == "compiled":
            raise ImportError(f"UNIFIER_CORE=compiled but {why}")
        log.warning("domain core: interpreted, 1.3–1.7× slower than compiled: %s", why)
        return "interpreted"
    if str(out) not in sys.path:
        sys.path.append(str(out))  # the shared library the modules' stubs import by name
    package_path.insert(0, str(out / "services" / "domain"))
    return "compiled"


def follow(package_path: list[str], package: str, core: str) -> None:
    """Called by the `__init__` of a package with `COMPILED` modules, with its `__path__`,
    its name and the domain's choice (`services.domain.CORE`): its compiled modules go
    first on its path exactly when the domain's did, from the same build (checked then,
    for every compiled source), so no package runs compiled beside an interpreted one."""
    if core == "compiled":
        package_path.insert(0, str(core_dir().joinpath(*package.split("."))))


def build(out: Path) -> None:
    """Compile `sources()` into `out`, replacing what was there only once the whole build
    has succeeded (a process starting meanwhile sees the old build or none, never half)."""
    from mypyc.build import mypycify  # a build-time dependency: mypy, in the dev extras
    from setuptools import Distribution, Extension

    out.parent.mkdir(parents=True, exist_ok=True)
    digest = source_digest()
    with tempfile.TemporaryDirectory(prefix="core-", dir=out.parent) as tmp:
        work = Path(tmp)
        cwd = Path.cwd()
        os.chdir(ROOT)  # mypyc names modules by their paths: services/domain/user.py
        try:
            extensions = mypycify(
                [str(p.relative_to(ROOT)) for p in sources()],
                opt_level="3", group_name=GROUP, target_dir=str(work / "c"),
            )
            extensions += [
                Extension(f"services.{p.parent.name}.{p.stem}", [str(p.relative_to(ROOT))], extra_compile_args=["-O2"])
                for p in c_sources()
            ]
            dist = Distribution({"name": "unifier-core", "ext_modules": extensions})
            cmd = dist.get_command_obj("build_ext")
            cmd.build_lib = str(work / "lib")  # type: ignore[attr-defined]
            cmd.build_temp = str(work / "temp")  # type: ignore[attr-defined]
            dist.run_command("build_ext")
        finally:
            os.chdir(cwd)
        (work / "lib" / MANIFEST).write_text(json.dumps({"digest": digest, "python": sys.version}) + "\n")
        old = work / "old"
        if out.exists():
            out.rename(old)
        (work / "lib").rename(out)  # the old build goes with the temporary directory


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        out = core_dir()
        build(out)
        print(f"domain core and projection compiled into {out} ({len(sources())} modules, {len(c_sources())} C extensions)")
        return 0
    if argv[:1] == ["check"]:
        why = _mismatch(core_dir())
        print(why or f"the compiled core in {core_dir()} matches the sources")
        return 1 if why else 0
    print("usage: python -m services.compiled_core build|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
