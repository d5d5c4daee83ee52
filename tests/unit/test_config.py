"""Settings.from_env: docs/contract.md "Configuration" defaults, overrides and refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.platform.config import ConfigError, Settings


def test_defaults_when_nothing_is_set() -> None:
    settings = Settings.from_env({})

    assert settings == Settings(
        kafka_bootstrap=None,
        database_url=None,
        topic_prefix="identity.",
        consumer_group="unifier",
        db_schema="unifier",
        partitions=12,
        data_dir=Path(".unifier"),
        metrics_port=9464,
        batch_max=5000,
    )


def test_every_variable_overrides_its_default() -> None:
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2.example:19092",
            "DATABASE_URL": "postgresql://u:p@db:5432/unifier",
            "UNIFIER_TOPIC_PREFIX": "staging.identity.",
            "UNIFIER_CONSUMER_GROUP": "unifier-staging",
            "UNIFIER_DB_SCHEMA": "unifier_v2",
            "UNIFIER_PARTITIONS": "24",
            "UNIFIER_DATA_DIR": "/var/lib/unifier",
            "UNIFIER_METRICS_PORT": "0",
            "UNIFIER_BATCH_MAX": "100",
            "UNIFIER_KAFKA_IDEMPOTENCE": "true",
        }
    )

    assert settings == Settings(
        kafka_bootstrap="k1:9092,k2.example:19092",
        database_url="postgresql://u:p@db:5432/unifier",
        topic_prefix="staging.identity.",
        consumer_group="unifier-staging",
        db_schema="unifier_v2",
        partitions=24,
        data_dir=Path("/var/lib/unifier"),
        metrics_port=0,
        batch_max=100,
        kafka_idempotence=True,
    )


def test_empty_values_count_as_unset() -> None:
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "", "UNIFIER_PARTITIONS": "  "})

    assert settings.kafka_bootstrap is None
    assert settings.partitions == 12


def test_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIFIER_TOPIC_PREFIX", "from-env.")

    assert Settings.from_env().topic_prefix == "from-env."


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost"),
        ("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,"),
        ("KAFKA_BOOTSTRAP_SERVERS", "k1:99999"),
        ("DATABASE_URL", "mysql://db/x"),
        ("UNIFIER_TOPIC_PREFIX", "bad prefix"),
        ("UNIFIER_TOPIC_PREFIX", "x" * 238),
        ("UNIFIER_DB_SCHEMA", "Unifier"),
        ("UNIFIER_DB_SCHEMA", "1abc"),
        ("UNIFIER_DB_SCHEMA", "x; DROP TABLE users"),
        ("UNIFIER_DB_SCHEMA", "x" * 64),
        ("UNIFIER_PARTITIONS", "twelve"),
        ("UNIFIER_PARTITIONS", "0"),
        ("UNIFIER_METRICS_PORT", "-1"),
        ("UNIFIER_METRICS_PORT", "65536"),
        ("UNIFIER_BATCH_MAX", "0"),
        ("UNIFIER_BATCH_MAX", "1.5"),
        ("UNIFIER_KAFKA_IDEMPOTENCE", "maybe"),
    ],
)
def test_bad_value_is_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("TRUE", True), ("1", True), ("false", False), ("no", False)])
def test_kafka_idempotence_reads_the_usual_spellings_of_a_boolean(raw: str, expected: bool) -> None:
    assert Settings.from_env({"UNIFIER_KAFKA_IDEMPOTENCE": raw}).kafka_idempotence is expected
    assert Settings.from_env({}).kafka_idempotence is False  # tansu refuses idempotent producers


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_replace_is_validated_like_from_env() -> None:
    with pytest.raises(ConfigError, match="UNIFIER_DB_SCHEMA"):
        dataclasses.replace(Settings.from_env({}), db_schema="no-dashes")


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.partitions = 1  # type: ignore[misc]
