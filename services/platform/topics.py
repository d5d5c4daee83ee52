"""Create the service's topics at start (docs/contract.md, "Topics").

The inbound topics are the event store (replay rebuilds from them), so they keep records
forever; `user-changed` is compacted so a new consumer can load the latest state per key.
Brokers that refuse a config still get the topic, without it (logged). Safe to run from
several instances at once: a topic another instance created first is fine.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidConfigurationError,
    InvalidRequestError,
    PolicyViolationError,
    TopicAlreadyExistsError,
    for_code,
)

from services.platform.kafka import client_options

log = logging.getLogger(__name__)

# Inbound facts are kept forever (replay) and stamped by the broker when appended
# (LogAppendTime), so a producer's clock cannot date a record in the future of the log:
# event time is bounded by that stamp (docs/decisions.md, "Event time").
_INBOUND = {"retention.ms": "-1", "message.timestamp.type": "LogAppendTime"}
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "sdk-events": _INBOUND,
    "commands": _INBOUND,
    "import-rows": _INBOUND,
    "user-changed": {"cleanup.policy": "compact"},
    "dead-letter": {},
}
"""Topic suffix -> the configs asked for at creation."""

# What brokers answer when they do not accept a topic config.
_CONFIG_REFUSED = {
    InvalidConfigurationError.errno,
    PolicyViolationError.errno,
    InvalidRequestError.errno,
}


async def ensure_topics(
    bootstrap: str,
    prefix: str,
    partitions: int,
    *,
    wait_s: float = 30.0,
) -> None:
    """Create the missing `{prefix}{suffix}` topics of `TOPIC_CONFIGS`, then wait up to
    `wait_s` until the cluster lists them all. Existing topics are left as they are."""
    wanted = {prefix + suffix: configs for suffix, configs in TOPIC_CONFIGS.items()}
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        missing = sorted(wanted.keys() - set(await admin.list_topics()))
        if not missing:
            return
        # One replica per broker up to 3: 1 on tansu or a dev broker, 3 on a real cluster.
        brokers = (await admin.describe_cluster())["brokers"]
        replicas = max(1, min(3, len(brokers)))
        refused = await _create(admin, {n: wanted[n] for n in missing}, partitions, replicas)
        if refused:
            log.warning("broker refused topic configs %s; creating them without", refused)
            still = await _create(admin, {n: {} for n in refused}, partitions, replicas)
            if still:
                raise RuntimeError(f"broker refused to create topics {sorted(still)}")
        log.info("created topics %s (%d partitions, %d replicas)", missing, partitions, replicas)
        await _wait_listed(admin, set(wanted), wait_s)
    finally:
        await admin.close()


async def _create(
    admin: AIOKafkaAdminClient,
    topics: dict[str, dict[str, str]],
    partitions: int,
    replicas: int,
) -> dict[str, dict[str, str]]:
    """Create `topics`; those whose configs the broker refused (name -> configs)."""
    response = await admin.create_topics(
        [NewTopic(name, partitions, replicas, topic_configs=cfg) for name, cfg in topics.items()]
    )
    refused: dict[str, dict[str, str]] = {}
    for result in response.to_object()["topic_errors"]:
        name, code = result["topic"], result["error_code"]
        if code in (0, TopicAlreadyExistsError.errno):  # already there: another instance won
            continue
        if code in _CONFIG_REFUSED and topics[name]:
            refused[name] = topics[name]
            continue
        raise for_code(code)(f"creating topic {name}: {result.get('error_message')}")
    return refused


async def _wait_listed(admin: AIOKafkaAdminClient, names: set[str], wait_s: float) -> None:
    """Kafka creates topics asynchronously: producing right away can miss metadata."""
    deadline = time.monotonic() + wait_s
    while missing := names - set(await admin.list_topics()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {sorted(missing)} not listed after {wait_s}s")
        await asyncio.sleep(0.1)
