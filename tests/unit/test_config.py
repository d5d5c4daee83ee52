"""Settings.from_env: docs/contract.md "Configuration" defaults, overrides and refusals,
and the secrets rule (issue 11 item 3): no error, repr or log shows a password."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.platform import kafka
from services.platform.config import VARIABLES, ConfigError, Settings

PASSWORD = "s3cr3t-Pa55"


def test_defaults_when_nothing_is_set() -> None:
    settings = Settings.from_env({})

    assert settings.kafka_bootstrap is None
    assert settings.database_url is None
    assert settings.topic_prefix == "identity."
    assert settings.consumer_group == "unifier"
    assert settings.db_schema == "unifier"
    assert settings.partitions == 12
    assert settings.data_dir == Path(".unifier")
    assert settings.metrics_host == "0.0.0.0" and settings.metrics_port == 9464
    assert settings.metrics_read_timeout == 5.0
    assert settings.batch_max == 5000
    assert settings.kafka_idempotence is False  # tansu refuses idempotent producers
    assert settings.kafka_compression == "zstd"  # contract 1.4.0, "Compression"
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert (settings.http_addr, settings.http_host, settings.http_port) == ("127.0.0.1:8080", "127.0.0.1", 8080)
    assert settings.embedded is None and settings.embedded_allowed  # a laptop: embedded servers allowed
    assert settings.log_format == "json" and settings.log_level is None
    assert settings.pipeline == "auto"  # issue 14, session 9: pipelined while a process has a core beside it


def test_every_variable_overrides_its_default(tmp_path: Path) -> None:
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2.example:19092",
            "DATABASE_URL": "postgresql://u:p@db:5432/unifier",
            "UNIFIER_EMBEDDED": "0",
            "UNIFIER_TOPIC_PREFIX": "staging.identity.",
            "UNIFIER_CONSUMER_GROUP": "unifier-staging",
            "UNIFIER_DB_SCHEMA": "unifier_v2",
            "UNIFIER_PARTITIONS": "24",
            "UNIFIER_DATA_DIR": "/var/lib/unifier",
            "UNIFIER_METRICS_HOST": "127.0.0.1",
            "UNIFIER_METRICS_PORT": "0",
            "UNIFIER_METRICS_READ_TIMEOUT": "2.5",
            "UNIFIER_BATCH_MAX": "100",
            "UNIFIER_KAFKA_IDEMPOTENCE": "true",
            "UNIFIER_KAFKA_COMPRESSION": "none",
            "UNIFIER_HTTP_ADDR": "[::1]:9000",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "unifier",
            "KAFKA_SASL_PASSWORD_FILE": str(password_file),
            "UNIFIER_LOG_LEVEL": "DEBUG",
            "UNIFIER_LOG_FORMAT": "text",
            "UNIFIER_IMPORT_STALL_AFTER_ROWS": "7",
            "UNIFIER_PIPELINE": "false",
        }
    )

    assert settings.kafka_bootstrap == "k1:9092,k2.example:19092"
    assert settings.database_url == "postgresql://u:p@db:5432/unifier"
    assert settings.embedded is False
    assert (settings.topic_prefix, settings.consumer_group, settings.db_schema) == ("staging.identity.", "unifier-staging", "unifier_v2")
    assert (settings.partitions, settings.batch_max) == (24, 100)
    assert settings.data_dir == Path("/var/lib/unifier")
    assert (settings.metrics_host, settings.metrics_port, settings.metrics_read_timeout) == ("127.0.0.1", 0, 2.5)
    assert settings.kafka_idempotence is True
    assert settings.kafka_compression == "none"
    assert (settings.http_host, settings.http_port) == ("::1", 9000)
    assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_username == "unifier"
    assert settings.kafka_sasl_password is not None and settings.kafka_sasl_password.get_secret_value() == PASSWORD
    assert (settings.log_level, settings.log_format) == ("DEBUG", "text")
    assert settings.import_stall_after_rows == 7
    assert settings.pipeline is False


def test_every_field_is_read_from_one_documented_variable() -> None:
    contract = (Path(__file__).parents[2] / "docs" / "contract.md").read_text()
    table = contract.split("## Configuration", 1)[1].split("\n## ", 1)[0]

    for variable in VARIABLES:
        assert f"`{variable}`" in table, f"{variable} is not in docs/contract.md, Configuration"


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
        ("UNIFIER_METRICS_HOST", "a host"),
        ("UNIFIER_METRICS_READ_TIMEOUT", "0"),
        ("UNIFIER_BATCH_MAX", "0"),
        ("UNIFIER_BATCH_MAX", "1.5"),
        ("UNIFIER_KAFKA_IDEMPOTENCE", "maybe"),
        ("UNIFIER_EMBEDDED", "perhaps"),
        ("UNIFIER_HTTP_ADDR", "8080"),
        ("UNIFIER_HTTP_ADDR", "localhost:70000"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("KAFKA_SASL_MECHANISM", "GSSAPI"),
        ("UNIFIER_LOG_LEVEL", "LOUD"),
        ("UNIFIER_LOG_FORMAT", "xml"),
    ],
)
def test_bad_value_is_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("TRUE", True), ("1", True), ("false", False), ("no", False)])
def test_booleans_read_the_usual_spellings(raw: str, expected: bool) -> None:
    assert Settings.from_env({"UNIFIER_KAFKA_IDEMPOTENCE": raw}).kafka_idempotence is expected


@pytest.mark.parametrize(("raw", "host"), [("127.0.0.1", "127.0.0.1"), ("::", "::"), ("[::1]", "::1"), ("metrics.local", "metrics.local")])
def test_metrics_host_takes_names_and_both_address_families(raw: str, host: str) -> None:
    assert Settings.from_env({"UNIFIER_METRICS_HOST": raw}).metrics_host == host


def test_embedded_off_requires_a_broker_and_a_database() -> None:
    """Issue 11 item 6: the image sets UNIFIER_EMBEDDED=0; a missing variable is an error,
    never an in-memory broker started silently."""
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL"):
        Settings.from_env({"UNIFIER_EMBEDDED": "0"})
    with pytest.raises(ConfigError, match="DATABASE_URL must be set"):
        Settings.from_env({"UNIFIER_EMBEDDED": "0", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    ok = Settings.from_env({"UNIFIER_EMBEDDED": "0", "KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://db/x"})
    assert not ok.embedded_allowed


def test_sasl_needs_mechanism_user_and_password() -> None:
    base = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    with pytest.raises(ConfigError, match="KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD"):
        Settings.from_env(base)
    with pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL is PLAINTEXT"):
        Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_SASL_USERNAME": "u"})
    with pytest.raises(ConfigError, match="needs KAFKA_BOOTSTRAP_SERVERS"):
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL"})


def test_password_from_the_environment_or_a_file_not_both(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD)
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"}

    direct = Settings.from_env({**env, "KAFKA_SASL_PASSWORD": PASSWORD})
    from_file = Settings.from_env({**env, "KAFKA_SASL_PASSWORD_FILE": str(secret)})

    assert direct.kafka_sasl_password == from_file.kafka_sasl_password
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({**env, "KAFKA_SASL_PASSWORD": PASSWORD, "KAFKA_SASL_PASSWORD_FILE": str(secret)})
    with pytest.raises(ConfigError, match="KAFKA_SASL_PASSWORD_FILE names a file that cannot be read"):
        Settings.from_env({**env, "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "missing")})


def test_database_url_from_a_file(tmp_path: Path) -> None:
    url = tmp_path / "db"
    url.write_text(f"postgresql://u:{PASSWORD}@db/x\n")

    assert Settings.from_env({"DATABASE_URL_FILE": str(url)}).database_url == f"postgresql://u:{PASSWORD}@db/x"


@pytest.mark.parametrize(
    "env",
    [
        {"DATABASE_URL": f"mysql://u:{PASSWORD}@db/x"},
        {"DATABASE_URL": f"postgresql://u:{PASSWORD}@db/x", "UNIFIER_DB_SCHEMA": "Bad"},
        {"DATABASE_URL": f"postgresql://u:{PASSWORD}@db/x", "UNIFIER_EMBEDDED": "0"},
        {"DATABASE_URL": f"{PASSWORD}"},
        {"KAFKA_BOOTSTRAP_SERVERS": "k:1", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": PASSWORD},
        {"KAFKA_BOOTSTRAP_SERVERS": "k:1", "KAFKA_SASL_PASSWORD": PASSWORD},
    ],
)
def test_a_configuration_error_never_shows_a_secret(env: dict[str, str]) -> None:
    """Issue 11: "a configuration error echoes DATABASE_URL with its password"."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)

    assert PASSWORD not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no pydantic echo chained


def test_settings_never_show_secrets_in_repr_or_dump() -> None:
    settings = Settings.from_env({
        "DATABASE_URL": f"postgresql://u:{PASSWORD}@db/x", "KAFKA_BOOTSTRAP_SERVERS": "k:1",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": PASSWORD,
    })

    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert PASSWORD not in settings.model_dump_json()


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_replace_is_validated_like_from_env() -> None:
    settings = Settings.from_env({})

    assert settings.replace(database_url="postgresql://db/x", metrics_port=0).database_url == "postgresql://db/x"
    with pytest.raises(ConfigError, match="UNIFIER_DB_SCHEMA"):
        settings.replace(db_schema="no-dashes")


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})

    with pytest.raises(ValidationError):
        settings.partitions = 1  # type: ignore[misc]


def test_kafka_client_options_carry_the_security_of_the_configured_broker_only() -> None:
    """Issue 11 item 6: TLS/SASL reach every producer, consumer and admin client."""
    settings = Settings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": "managed.example:9096", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": PASSWORD,
    })
    kafka.use(settings)

    options = kafka.client_options("managed.example:9096")
    embedded = kafka.client_options("127.0.0.1:40000")

    assert options["bootstrap_servers"] == "managed.example:9096"
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "svc" and options["sasl_plain_password"] == PASSWORD
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED and options["ssl_context"].check_hostname
    assert embedded == {"bootstrap_servers": "127.0.0.1:40000"}


def test_the_cli_refuses_a_bad_database_url_without_echoing_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 11: `unifier` printed DATABASE_URL with its password on a configuration error."""
    from services.runtime.cli import main

    monkeypatch.setenv("DATABASE_URL", f"postgres ql://unifier:{PASSWORD}@db/unifier")

    assert main(["digest"]) == 2
    err = capsys.readouterr().err
    assert "DATABASE_URL" in err and PASSWORD not in err


def test_producers_get_the_configured_codec_and_zstd_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Contract 1.4.0, "Compression": every producer of the process sends batches in
    UNIFIER_KAFKA_COMPRESSION's codec ("none": uncompressed); consumers and admin
    clients get no codec option (aiokafka's consumer has none)."""
    monkeypatch.setattr(kafka, "_COMPRESSION", kafka.compression())  # use() sets it for the process
    kafka.use(Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}))
    assert kafka.producer_options("k:9092") == {"bootstrap_servers": "k:9092", "compression_type": "zstd"}
    assert "compression_type" not in kafka.client_options("k:9092")
    kafka.use(Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "UNIFIER_KAFKA_COMPRESSION": "none"}))
    assert kafka.producer_options("127.0.0.1:40000")["compression_type"] is None  # the embedded broker's too
    kafka.use(Settings.from_env({"UNIFIER_KAFKA_COMPRESSION": "lz4"}))
    assert kafka.compression() == "lz4"
    with pytest.raises(ConfigError, match="UNIFIER_KAFKA_COMPRESSION"):
        Settings.from_env({"UNIFIER_KAFKA_COMPRESSION": "brotli"})


def test_faststream_gets_the_same_security_as_aiokafka() -> None:
    """The API publishes through faststream (issue 12); it must reach a secured broker too."""
    from faststream.security import SASLScram512

    settings = Settings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": "scram.example:9096", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": PASSWORD,
    })
    kafka.use(settings)

    security = kafka.faststream_security("scram.example:9096")

    assert isinstance(security, SASLScram512) and security.use_ssl
    assert kafka.faststream_security("127.0.0.1:1") is None


def test_kafka_session_timeout_defaults_to_10_s_and_is_bounded() -> None:
    """UNIFIER_KAFKA_SESSION_TIMEOUT_MS: the projection's group session (tests run with 3 s:
    tansu holds each join for half of it)."""
    assert Settings.from_env({}).kafka_session_timeout_ms == 10_000
    assert Settings.from_env({"UNIFIER_KAFKA_SESSION_TIMEOUT_MS": "3000"}).kafka_session_timeout_ms == 3000
    for bad in ("999", "300001", "soon"):
        with pytest.raises(ConfigError, match="UNIFIER_KAFKA_SESSION_TIMEOUT_MS"):
            Settings.from_env({"UNIFIER_KAFKA_SESSION_TIMEOUT_MS": bad})


@pytest.mark.parametrize(("raw", "processes", "cores", "expected"), [
    (None, 1, 2, True), (None, 2, 2, False), (None, 3, 2, False), (None, 2, 4, True), (None, 1, 1, False),
    ("auto", 1, 8, True), ("true", 4, 2, True), ("false", 1, 8, False), ("1", 2, 2, True),
])
def test_the_pipeline_runs_while_the_processes_are_fewer_than_the_cores(
    monkeypatch: pytest.MonkeyPatch, raw: str | None, processes: int, cores: int, expected: bool,
) -> None:
    """Issue 14, session 9 (docs/decisions.md): with a projection process per core the
    processes overlap each other's waits and one batch at a time was faster; a process
    with a core beside it (for PostgreSQL) pipelines. `UNIFIER_PIPELINE` true/false
    decides alone; the cores are the process's own (its affinity)."""
    from services.platform import config

    monkeypatch.setattr(config, "usable_cores", lambda: cores)
    env = {"UNIFIER_PROJECTION_PROCESSES": str(processes)} | ({"UNIFIER_PIPELINE": raw} if raw is not None else {})
    assert Settings.from_env(env).pipelined is expected


def test_usable_cores_are_the_affinity_of_the_process() -> None:
    import os

    from services.platform.config import usable_cores

    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1


def test_projection_processes_are_given_the_main_process_decision_to_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """`UNIFIER_PROJECTION_PROCESSES=2` on 2 cores: the extra process (told one process)
    must not pipeline where the main one does not."""
    from services.platform import config
    from services.runtime.projections import child_settings

    monkeypatch.setattr(config, "usable_cores", lambda: 2)
    main = Settings.from_env({"UNIFIER_PROJECTION_PROCESSES": "2", "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
                              "DATABASE_URL": "postgresql://db/x"})
    child = child_settings(main)
    assert main.pipelined is False and child.pipelined is False and child.projection_processes == 1
