"""Issue 11 item 6: the deployment files fail safe — the image never runs embedded
servers, the compose file has no default password, every alert names a real metric."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY

import services.platform.metrics  # noqa: F401 - registers the service's metrics

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_the_image_forbids_embedded_servers() -> None:
    env_block = (DEPLOY / "Dockerfile").read_text().split("ENV PYTHONUNBUFFERED", 1)[1].split("\nRUN ", 1)[0]

    assert re.search(r"\bUNIFIER_EMBEDDED=0\b", env_block)


def test_the_image_runs_the_compiled_core_or_does_not_start() -> None:
    """The compiled core (docs/decisions.md, "The compiled core"): built in the build
    stage into the directory the runtime looks in, and required there."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    build_stage, runtime = dockerfile.split("\nFROM ", 2)[1:]
    env_block = runtime.split("ENV PYTHONUNBUFFERED", 1)[1].split("\nRUN ", 1)[0]

    built = re.search(r"UNIFIER_CORE_DIR=(\S+) python -m services.compiled_core build", build_stage)
    assert built, "the build stage compiles the core"
    assert re.search(r"\bUNIFIER_CORE=compiled\b", env_block)
    looked_in = re.search(r"\bUNIFIER_CORE_DIR=(\S+)", env_block)
    assert looked_in and f"COPY --from=build {built.group(1)} {looked_in.group(1)}" in runtime


def test_compose_has_no_default_password() -> None:
    compose = (DEPLOY / "compose.yaml").read_text()
    uses = re.findall(r"\$\{(\w*(?:PASSWORD|SECRET)\w*)([^}]*)\}", compose)

    assert uses, "the compose file should take the database password from the environment"
    for name, rest in uses:
        assert rest.startswith(":?"), f"${{{name}{rest}}} must be required (:?), never defaulted"
    assert "change-me" not in compose


def test_every_alert_names_a_metric_the_service_exports() -> None:
    alerts = (DEPLOY / "alerts.yml").read_text()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {m.name + end for m in REGISTRY.collect() for end in suffixes.get(m.type, ("",))}
    named = set(re.findall(r"\bunifier_[a-z_]+", alerts))

    assert named and named <= exported, named - exported
    assert "unifier_outbox_parked_total" in named  # the relay's parked messages are alerted
