"""The one configuration model, read from the environment (docs/contract.md, "Configuration").

Every knob of the process is here so that no module reads `os.environ` on its own: a test
builds a `Settings` from a dict (`Settings.from_env({...})`), production from the real
environment (`Settings.from_env()`). pydantic-settings reads and types the variables;
this module adds what the service needs on top:

- a blank value counts as unset (compose files often pass `VAR=`), so it takes the default;
- a secret may come from a file: `<VAR>_FILE` names it (Docker/Kubernetes secrets);
- every error is a `ConfigError` that names the variable and never shows a secret:
  pydantic's own messages echo the input, so they are rewritten here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the variable, never a secret."""


# Variables whose value is never shown, in an error or anywhere else.
SECRET_VARIABLES = frozenset({"DATABASE_URL", "KAFKA_SASL_PASSWORD", "UNIFIER_LOOKUP_KEK"})
# Variables that may instead be read from the file `<VAR>_FILE` names.
FILE_VARIABLES = ("DATABASE_URL", "KAFKA_SASL_PASSWORD", "UNIFIER_LOOKUP_KEK")

# Interpolated into SQL (`SET search_path`, `CREATE SCHEMA`), so only a plain identifier
# that needs no quoting; PostgreSQL truncates names past 63 bytes.
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Kafka topic names are [A-Za-z0-9._-]{1,249}; the longest suffix is "user-changed".
_TOPIC_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,237}")
_BROKER = re.compile(r"[^\s,:]+:(\d{1,5})")
# host:port, the host a name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d{1,5})")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# The mapping `from_env` reads instead of os.environ (None: os.environ).
_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("unifier_environment", default=None)


def _env(name: str, *more: str) -> Any:
    """The field reads variable `name` (and its own field name, for `replace`)."""
    return AliasChoices(name, *more)


class Settings(BaseSettings):
    """Process configuration. Build with `Settings.from_env()`; derive a changed copy with
    `settings.replace(field=value)`, validated the same way."""

    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, populate_by_name=True, extra="ignore",
        # Only `from_env`'s source below: no .env file, no secrets directory.
        env_ignore_empty=True,
    )

    # -- where the broker and the database are ------------------------------------------
    kafka_bootstrap: str | None = Field(default=None, validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap"))
    # The URL holds the password: kept as a secret, read through `database_url`.
    database_dsn: SecretStr | None = Field(default=None, validation_alias=_env("DATABASE_URL", "database_url", "database_dsn"))
    # Embedded servers when the two above are unset: None (unset) allows them, as on a
    # laptop; the container image sets 0, so a missing variable there is an error.
    embedded: bool | None = Field(default=None, validation_alias=_env("UNIFIER_EMBEDDED", "embedded"))
    data_dir: Path = Field(default=Path("./.unifier"), validation_alias=_env("UNIFIER_DATA_DIR", "data_dir"))

    # -- names ---------------------------------------------------------------------------
    topic_prefix: str = Field(default="identity.", validation_alias=_env("UNIFIER_TOPIC_PREFIX", "topic_prefix"))
    consumer_group: str = Field(default="unifier", validation_alias=_env("UNIFIER_CONSUMER_GROUP", "consumer_group"))
    db_schema: str = Field(default="unifier", validation_alias=_env("UNIFIER_DB_SCHEMA", "db_schema"))
    partitions: int = Field(default=12, validation_alias=_env("UNIFIER_PARTITIONS", "partitions"))
    batch_max: int = Field(default=5000, validation_alias=_env("UNIFIER_BATCH_MAX", "batch_max"))
    # Users the projection keeps in memory between batches (~5 KB each; 0: none, every
    # batch loads its users from PostgreSQL). services/projection/resident.py.
    resident_users: int = Field(default=200_000, ge=0, validation_alias=_env("UNIFIER_RESIDENT_USERS", "resident_users"))
    # Projection processes `unifier run` starts on this machine, one consumer group: the
    # projection is bound to one core per process (docs/operations.md, "Several processes
    # on one machine"). 1: the projection in the main process only.
    projection_processes: int = Field(
        default=1, ge=1, le=64, validation_alias=_env("UNIFIER_PROJECTION_PROCESSES", "projection_processes"))
    # How the group shares the inbound partitions, both co-partitioned: "load" balances
    # their traffic (services/projection/assignor.py), "range" deals contiguous blocks.
    partition_assignor: Literal["load", "range"] = Field(
        default="load", validation_alias=_env("UNIFIER_PARTITION_ASSIGNOR", "partition_assignor"))
    # Batch N+1 applied in memory while N commits (services/projection/pipeline.py); off:
    # one batch at a time, the path every failure falls back to anyway. "auto" (`pipelined`):
    # on while the projection processes are fewer than the cores they may run on.
    pipeline: bool | Literal["auto"] = Field(default="auto", validation_alias=_env("UNIFIER_PIPELINE", "pipeline"))
    # The outbox relay in a process of its own that `unifier run` starts and supervises
    # (services/runtime/relay_process.py), off the projection's thread; false: a task
    # of the main process. docs/operations.md, "The relay's process".
    relay_process: bool = Field(default=False, validation_alias=_env("UNIFIER_RELAY_PROCESS", "relay_process"))

    # -- Kafka clients -------------------------------------------------------------------
    # Idempotent producers: on for Apache Kafka (a retried send is never doubled);
    # off by default because tansu, the embedded broker, refuses them.
    kafka_idempotence: bool = Field(default=False, validation_alias=_env("UNIFIER_KAFKA_IDEMPOTENCE", "kafka_idempotence"))
    # The codec of every record batch the service produces (user-changed, import rows,
    # dead letters, commands): zstd cuts the broker's work on an import's ~1 KB `created`
    # messages by ~8 µs a row (docs/decisions.md, "Issue 14, session 24"). "none" for
    # consumers whose Kafka client cannot read zstd (kafkajs without its codec plugin).
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="zstd", validation_alias=_env("UNIFIER_KAFKA_COMPRESSION", "kafka_compression"))
    # The projection's consumer-group session: an instance that sends no heartbeat for
    # this long is dropped from the group and its partitions handed on. tansu also holds
    # every group join for half of it (at least 1 s), so the tests run with 3000.
    kafka_session_timeout_ms: int = Field(
        default=10_000, ge=1000, le=300_000,
        validation_alias=_env("UNIFIER_KAFKA_SESSION_TIMEOUT_MS", "kafka_session_timeout_ms"))
    # The largest message the relay sends; a larger one is parked, not sent. Match the
    # broker's (topic's) message.max.bytes, whose Kafka default is 1048588.
    max_message_bytes: int = Field(default=1024 * 1024, validation_alias=_env("UNIFIER_MAX_MESSAGE_BYTES", "max_message_bytes"))
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", validation_alias=_env("KAFKA_SECURITY_PROTOCOL", "kafka_security_protocol"))
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, validation_alias=_env("KAFKA_SASL_MECHANISM", "kafka_sasl_mechanism"))
    kafka_sasl_username: str | None = Field(default=None, validation_alias=_env("KAFKA_SASL_USERNAME", "kafka_sasl_username"))
    kafka_sasl_password: SecretStr | None = Field(
        default=None, validation_alias=_env("KAFKA_SASL_PASSWORD", "kafka_sasl_password"))
    kafka_ssl_cafile: Path | None = Field(default=None, validation_alias=_env("KAFKA_SSL_CA_FILE", "kafka_ssl_cafile"))
    kafka_ssl_certfile: Path | None = Field(default=None, validation_alias=_env("KAFKA_SSL_CERT_FILE", "kafka_ssl_certfile"))
    kafka_ssl_keyfile: Path | None = Field(default=None, validation_alias=_env("KAFKA_SSL_KEY_FILE", "kafka_ssl_keyfile"))

    # -- listeners -----------------------------------------------------------------------
    http_addr: str = Field(default="127.0.0.1:8080", validation_alias=_env("UNIFIER_HTTP_ADDR", "http_addr"))
    # /metrics and /healthz: on every interface by default, so Prometheus and the
    # orchestrator reach it from outside the container (it serves no personal data).
    metrics_host: str = Field(default="0.0.0.0", validation_alias=_env("UNIFIER_METRICS_HOST", "metrics_host"))
    metrics_port: int = Field(default=9464, validation_alias=_env("UNIFIER_METRICS_PORT", "metrics_port"))
    # Seconds a client may take to send its request: a silent connection is closed.
    metrics_read_timeout: float = Field(default=5.0, validation_alias=_env("UNIFIER_METRICS_READ_TIMEOUT", "metrics_read_timeout"))

    # -- logs ------------------------------------------------------------------------------
    # Unset: INFO for `unifier run` (and `api`), WARNING for the one-shot commands.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        default=None, validation_alias=_env("UNIFIER_LOG_LEVEL", "log_level"))
    log_format: Literal["json", "text"] = Field(default="json", validation_alias=_env("UNIFIER_LOG_FORMAT", "log_format"))

    # How long an import row may wait to be applied: the importer publishes at the
    # service's pace, about that far ahead (services/importer/window.py), so another
    # channel's fact on the import's partition waits about that long behind it.
    # 0: no pacing (the whole file at once).
    import_lead_s: float = Field(default=0.4, validation_alias=_env("UNIFIER_IMPORT_LEAD_S", "import_lead_s"))

    # Fault injection for the importer crash tests: after publishing this many rows the
    # importer hangs until killed. 0 (never) in production.
    import_stall_after_rows: int = Field(
        default=0, validation_alias=_env("UNIFIER_IMPORT_STALL_AFTER_ROWS", "import_stall_after_rows"))

    # -- external lookups (services/lookup, docs/lookups.md) ------------------------------
    # The key-encryption key that wraps every lookup's payload key at rest: base64 of 32
    # bytes. Unset: encrypted lookups can be neither defined nor called.
    lookup_kek: SecretStr | None = Field(default=None, validation_alias=_env("UNIFIER_LOOKUP_KEK", "lookup_kek"))
    # Networks a lookup may reach although they are not public (private, loopback,
    # link-local…): comma-separated CIDRs. Empty: public addresses only.
    lookup_allow_networks: str = Field(default="", validation_alias=_env("UNIFIER_LOOKUP_ALLOW_NETWORKS", "lookup_allow_networks"))
    lookup_timeout: float = Field(default=5.0, validation_alias=_env("UNIFIER_LOOKUP_TIMEOUT", "lookup_timeout"))
    lookup_max_bytes: int = Field(default=65536, validation_alias=_env("UNIFIER_LOOKUP_MAX_BYTES", "lookup_max_bytes"))
    lookup_rate: float = Field(default=5.0, validation_alias=_env("UNIFIER_LOOKUP_RATE", "lookup_rate"))

    # -- reading -------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the variables from `env` (default: `os.environ`); ConfigError if unusable."""
        token = _ENVIRONMENT.set(env)
        try:
            return cls()
        except ValidationError as err:
            raise ConfigError(describe(err)) from None
        finally:
            _ENVIRONMENT.reset(token)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _Environment(settings_cls))

    @property
    def pipelined(self) -> bool:
        """Whether the projection pipelines its batches (`UNIFIER_PIPELINE`). "auto": while
        `projection_processes` are fewer than the cores this process may run on. The
        pipeline overlaps a process's Python with PostgreSQL's work on its batch, which
        needs a core beside it; with a process per core, the processes already overlap
        each other's waits, and the pipeline's own costs (the prepared batch walked by
        the collector, the turns given to the write) made it slower than one batch at a
        time (docs/decisions.md, "Issue 14, session 9: array parameters, and when to
        pipeline")."""
        if isinstance(self.pipeline, bool):
            return self.pipeline
        return self.projection_processes < usable_cores()

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` (by field name, or `database_url`), validated."""
        values = {**self.model_dump(), **changes}
        if "database_url" in changes:
            values["database_dsn"] = values.pop("database_url")
        try:
            return type(self).model_validate(values)
        except ValidationError as err:
            raise ConfigError(describe(err)) from None

    # -- derived -------------------------------------------------------------------------
    @property
    def database_url(self) -> str | None:
        """The `postgresql://` URL (with its password: never log it; see `redact`)."""
        return None if self.database_dsn is None else self.database_dsn.get_secret_value()

    @property
    def embedded_allowed(self) -> bool:
        return self.embedded is not False

    @property
    def http_host(self) -> str:
        return _split_address(self.http_addr)[0]

    @property
    def http_port(self) -> int:
        return _split_address(self.http_addr)[1]

    # -- checks (messages name no value: `describe` adds the safe ones) --------------------
    @field_validator("kafka_bootstrap")
    @classmethod
    def _brokers(cls, value: str | None) -> str | None:
        if value is not None:
            brokers = value.split(",")
            if not all((m := _BROKER.fullmatch(b.strip())) and 0 < int(m[1]) < 65536 for b in brokers):
                raise ValueError("must be host:port[,host:port...]")
        return value

    @field_validator("database_dsn")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        if not _TOPIC_PREFIX.fullmatch(value):
            raise ValueError("must be 1-237 of the characters A-Z a-z 0-9 . _ -")
        return value

    @field_validator("consumer_group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not value or value != value.strip():
            raise ValueError("must be a non-empty name without surrounding blanks")
        return value

    @field_validator("db_schema")
    @classmethod
    def _schema(cls, value: str) -> str:
        if not _SCHEMA.fullmatch(value):
            raise ValueError("must be a plain identifier [a-z_][a-z0-9_]* of at most 63 characters")
        return value

    @field_validator("partitions", "batch_max", "max_message_bytes")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("metrics_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError("must be a port 0-65535 (0: any free port)")
        return value

    @field_validator("http_addr")
    @classmethod
    def _address(cls, value: str) -> str:
        _split_address(value)
        return value

    @field_validator("metrics_host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]+|\[?[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]?", value):
            raise ValueError("must be a host name or an IPv4/IPv6 address (0.0.0.0: every interface)")
        return value.strip("[]")

    @field_validator("metrics_read_timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if not 0 < value <= 3600:
            raise ValueError("must be a number of seconds above 0 and at most 3600")
        return value

    @field_validator("lookup_kek")
    @classmethod
    def _kek(cls, value: SecretStr | None) -> SecretStr | None:
        import base64
        import binascii

        if value is not None:
            try:
                ok = len(base64.b64decode(value.get_secret_value(), validate=True)) == 32
            except (binascii.Error, ValueError):
                ok = False
            if not ok:
                raise ValueError("must be the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)")
        return value

    @field_validator("lookup_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        import ipaddress

        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"must be comma-separated networks like 127.0.0.0/8 or ::1/128; {part!r} is not one") from None
        return value

    @field_validator("lookup_timeout")
    @classmethod
    def _lookup_timeout(cls, value: float) -> float:
        if not 0 < value <= 60:
            raise ValueError("must be a number of seconds above 0 and at most 60")
        return value

    @field_validator("lookup_max_bytes")
    @classmethod
    def _lookup_bytes(cls, value: int) -> int:
        if not 1024 <= value <= 16 * 1024 * 1024:
            raise ValueError("must be between 1024 and 16777216 bytes")
        return value

    @field_validator("lookup_rate")
    @classmethod
    def _lookup_rate(cls, value: float) -> float:
        if not 0 < value <= 10_000:
            raise ValueError("must be calls per second above 0 and at most 10000")
        return value

    @field_validator("import_stall_after_rows", "import_lead_s")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be 0 or more")
        return value

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"names a file that cannot be read: {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.embedded is False and (not self.kafka_bootstrap or self.database_dsn is None):
            missing = [v for v, x in (("KAFKA_BOOTSTRAP_SERVERS", self.kafka_bootstrap), ("DATABASE_URL", self.database_dsn)) if not x]
            raise ValueError(
                f"UNIFIER_EMBEDDED=0 forbids embedded servers, so {' and '.join(missing)} must be set"
            )
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        if protocol != "PLAINTEXT" and not self.kafka_bootstrap:
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_BOOTSTRAP_SERVERS (the embedded broker is plaintext)")
        if sasl:
            missing = [v for v, x in (
                ("KAFKA_SASL_MECHANISM", self.kafka_sasl_mechanism), ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                ("KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)", self.kafka_sasl_password),
            ) if not x]
            if missing:
                raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
        elif self.kafka_sasl_mechanism or self.kafka_sasl_username or self.kafka_sasl_password:
            raise ValueError(f"KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL is {protocol}, which does not use it")
        if not protocol.endswith("SSL") and (self.kafka_ssl_cafile or self.kafka_ssl_certfile or self.kafka_ssl_keyfile):
            raise ValueError(f"KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL is {protocol}, which does not use TLS")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together (a client certificate and its key)")
        return self


def _split_address(value: str) -> tuple[str, int]:
    m = _ADDRESS.fullmatch(value)
    if not m or int(m["port"]) > 65535:
        raise ValueError("must be host:port (e.g. 127.0.0.1:8080, [::1]:8080, 0.0.0.0:0)")
    return m["host"].strip("[]"), int(m["port"])


class _Environment(EnvSettingsSource):
    """The environment as `from_env` was given it: blank values dropped, surrounding
    blanks stripped, and `<VAR>_FILE` read for the variables of FILE_VARIABLES."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        given = _ENVIRONMENT.get()
        source = os.environ if given is None else given
        values = {name: value.strip() for name, value in source.items() if value and value.strip()}
        for name in FILE_VARIABLES:
            path = values.get(f"{name}_FILE")
            if path is None:
                continue
            if name in values:
                raise ConfigError(f"set {name} or {name}_FILE, not both")
            try:
                content = Path(path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as err:
                raise ConfigError(f"{name}_FILE names a file that cannot be read: {path} ({type(err).__name__})") from None
            if content:
                values[name] = content
        return values


def describe(err: ValidationError) -> str:
    """pydantic's errors as one line per variable, naming it, without secret values."""
    lines = []
    for e in err.errors(include_url=False, include_input=True):
        variable = str(e["loc"][0]) if e["loc"] else ""
        variable = _VARIABLE_OF.get(variable, variable)
        message = e["msg"].removeprefix("Value error, ")
        message = message.replace("Input should be", "must be")  # pydantic's wording, ours
        if not variable:
            lines.append(message)
        elif variable in SECRET_VARIABLES:
            lines.append(f"{variable} {message} (value not shown: it holds a secret)")
        else:
            lines.append(f"{variable} {message}, got {e.get('input')!r}")
    return "; ".join(lines)


# Field name -> its environment variable (errors name the variable the operator set).
_VARIABLE_OF = {
    name: next(c for c in field.validation_alias.choices if isinstance(c, str))  # type: ignore[union-attr]
    for name, field in Settings.model_fields.items()
}
VARIABLES = tuple(_VARIABLE_OF.values())
"""Every variable `Settings` reads (plus `<VAR>_FILE` for FILE_VARIABLES)."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or taskset's
    limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
