"""The one configuration object, read from the environment (docs/contract.md, "Configuration").

Every knob of the process is here so that no module reads `os.environ` on its own: a test
builds a `Settings` from a dict, production from the real environment. An empty value
counts as unset (compose files often pass `VAR=`), so it takes the default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the variable."""


# Which environment variable feeds each field, so every error can name it.
_VARIABLE = {
    "kafka_bootstrap": "KAFKA_BOOTSTRAP_SERVERS",
    "database_url": "DATABASE_URL",
    "topic_prefix": "UNIFIER_TOPIC_PREFIX",
    "consumer_group": "UNIFIER_CONSUMER_GROUP",
    "db_schema": "UNIFIER_DB_SCHEMA",
    "partitions": "UNIFIER_PARTITIONS",
    "data_dir": "UNIFIER_DATA_DIR",
    "metrics_port": "UNIFIER_METRICS_PORT",
    "batch_max": "UNIFIER_BATCH_MAX",
    "kafka_idempotence": "UNIFIER_KAFKA_IDEMPOTENCE",
    "http_addr": "UNIFIER_HTTP_ADDR",
}
_INT_FIELDS = frozenset({"partitions", "metrics_port", "batch_max"})
_BOOL_FIELDS = frozenset({"kafka_idempotence"})
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

# Interpolated into SQL (`SET search_path`, `CREATE SCHEMA`), so only a plain identifier
# that needs no quoting; PostgreSQL truncates names past 63 bytes.
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Kafka topic names are [A-Za-z0-9._-]{1,249}; the longest suffix is "user-changed".
_TOPIC_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,237}")
_BROKER = re.compile(r"[^\s,:]+:(\d{1,5})")


@dataclass(frozen=True, slots=True)
class Settings:
    """Process configuration. Build with `Settings.from_env()`; direct construction and
    `dataclasses.replace` are validated the same way."""

    kafka_bootstrap: str | None = None
    database_url: str | None = None
    topic_prefix: str = "identity."
    consumer_group: str = "unifier"
    db_schema: str = "unifier"
    partitions: int = 12
    data_dir: Path = field(default_factory=lambda: Path("./.unifier"))
    metrics_port: int = 9464
    batch_max: int = 5000
    # Idempotent producers: on for Apache Kafka (a retried send is never doubled);
    # off by default because tansu, the embedded broker, refuses them.
    kafka_idempotence: bool = False
    # The HTTP API's listening address, host:port (port 0: any free port).
    http_addr: str = "127.0.0.1:8080"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the variables of `_VARIABLE` from `env` (default: `os.environ`)."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, variable in _VARIABLE.items():
            raw = source.get(variable, "").strip()
            if not raw:
                continue
            if name in _INT_FIELDS:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ConfigError(f"{variable} must be an integer, got {raw!r}") from None
            elif name in _BOOL_FIELDS:
                if raw.lower() not in _BOOLS:
                    raise ConfigError(f"{variable} must be true or false, got {raw!r}")
                values[name] = _BOOLS[raw.lower()]
            elif name == "data_dir":
                values[name] = Path(raw)
            else:
                values[name] = raw
        return cls(**values)

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = _check(f.name, getattr(self, f.name))
            if problem:
                raise ConfigError(f"{_VARIABLE[f.name]} {problem}")


def _check(name: str, value: Any) -> str | None:
    """Why `value` is unusable for field `name`, or None when it is fine."""
    if name == "kafka_bootstrap" and value is not None:
        brokers = value.split(",")
        if not all((m := _BROKER.fullmatch(b.strip())) and 0 < int(m[1]) < 65536 for b in brokers):
            return f"must be host:port[,host:port...], got {value!r}"
    elif name == "database_url" and value is not None:
        if not value.startswith(("postgresql://", "postgres://")):
            return f"must be a postgresql:// URL, got {value!r}"
    elif name == "topic_prefix" and not _TOPIC_PREFIX.fullmatch(value):
        return f"must be 1-237 of the characters A-Z a-z 0-9 . _ -, got {value!r}"
    elif name == "consumer_group" and (not value or value != value.strip()):
        return f"must be a non-empty name without surrounding blanks, got {value!r}"
    elif name == "db_schema" and not _SCHEMA.fullmatch(value):
        return (
            f"must be a plain identifier [a-z_][a-z0-9_]* of at most 63 characters, got {value!r}"
        )
    elif name == "partitions" and value < 1:
        return f"must be at least 1, got {value}"
    elif name == "metrics_port" and not 0 <= value <= 65535:
        return f"must be a port 0-65535 (0: any free port), got {value}"
    elif name == "http_addr" and not ((m := _BROKER.fullmatch(value)) and 0 <= int(m[1]) < 65536):
        return f"must be host:port, got {value!r}"
    elif name == "batch_max" and value < 1:
        return f"must be at least 1, got {value}"
    return None
