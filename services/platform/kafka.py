"""How every Kafka client of the process reaches the broker: address plus security.

`client_options(bootstrap)` gives the aiokafka keyword arguments (`bootstrap_servers`,
and for the configured broker its TLS/SASL settings) that every producer, consumer and
admin client is built with, and `producer_options(bootstrap)` adds the codec of what
producers send: `AIOKafkaProducer(**producer_options(bootstrap), acks="all")`.

The broker address travels through the code as a plain string (to replay's worker
processes too), so the security settings are looked up by it: `use(settings)` records
them for `settings.kafka_bootstrap` once per process (the CLI and `infrastructure()` do).
An embedded broker's address is never recorded, so it is always reached in plaintext.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # annotations only: a replay worker reaches the broker without the settings' pydantic
    from .config import Settings

_SECURED: dict[str, dict[str, Any]] = {}
Codec = Literal["gzip", "snappy", "lz4", "zstd"]
_COMPRESSION: Codec | None = "zstd"  # see Settings.kafka_compression


def security_options(settings: Settings) -> dict[str, Any]:
    """aiokafka's security keyword arguments for `settings` (none for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        options["ssl_context"] = _tls(settings)
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # Settings checked it
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def _tls(settings: Settings) -> ssl.SSLContext:
    """Verifies the broker's certificate and host name: against KAFKA_SSL_CA_FILE when
    set, else the system's CAs (managed Kafka uses public ones). aiokafka is imported
    here, not with the module: `unifier` records the settings for every command, and
    most commands never reach the broker (issue 14, session 21)."""
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
    )


def use(settings: Settings) -> None:
    """Remember the configured broker's security for `client_options`, and the codec
    for `producer_options` (every broker of the process: the embedded one too)."""
    global _COMPRESSION
    if settings.kafka_bootstrap:
        _SECURED[settings.kafka_bootstrap] = security_options(settings)
    _COMPRESSION = None if settings.kafka_compression == "none" else settings.kafka_compression


def client_options(bootstrap: str) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client talking to `bootstrap`."""
    return {"bootstrap_servers": bootstrap, **_SECURED.get(bootstrap, {})}


def producer_options(bootstrap: str) -> dict[str, Any]:
    """`client_options` and the codec of the batches a producer sends
    (UNIFIER_KAFKA_COMPRESSION; zstd when `use` was not called: a test's relay, a
    benchmark's). The consumers of the service read every codec with cramjam, which
    aiokafka needs for all but gzip; a downstream consumer's client may not (contract
    1.4.0, "Compression")."""
    return {**client_options(bootstrap), "compression_type": _COMPRESSION}


def compression() -> Codec | None:
    """The codec `producer_options` gives (None: uncompressed)."""
    return _COMPRESSION


def faststream_security(bootstrap: str) -> Any:
    """The same security as a faststream `security=` object (None for plaintext), for
    the API's `KafkaBroker(bootstrap, security=faststream_security(bootstrap))`."""
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

    options = _SECURED.get(bootstrap, {})
    protocol = options.get("security_protocol", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return None
    tls = options.get("ssl_context")
    if not protocol.startswith("SASL_"):
        return BaseSecurity(ssl_context=tls, use_ssl=True)
    kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[options["sasl_mechanism"]]
    return kind(options["sasl_plain_username"], options["sasl_plain_password"], ssl_context=tls, use_ssl=tls is not None)
