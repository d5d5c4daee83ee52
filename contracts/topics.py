"""Topic names of docs/contract.md, derived from one prefix.

Every topic name is built here so that a test can run against its own random prefix and
production can move to another namespace by changing `UNIFIER_TOPIC_PREFIX` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

DEFAULT_PREFIX = "identity."

InboundKind = Literal["sdk-events", "commands", "import-rows"]
"""The three inbound topics without their prefix; selects the message union to parse."""

INBOUND_KINDS: tuple[InboundKind, ...] = get_args(InboundKind)

# Kafka accepts only these characters in a topic name, at most 249 of them; the longest
# suffix is "user-changed" (12), so a prefix is refused early rather than at topic creation.
_LEGAL_PREFIX = re.compile(r"[A-Za-z0-9._-]{0,237}")


@dataclass(frozen=True, slots=True)
class Topics:
    """The five topic names for one prefix: `Topics()` or `Topics("t_1234.")`."""

    prefix: str = DEFAULT_PREFIX
    sdk_events: str = field(init=False)
    commands: str = field(init=False)
    import_rows: str = field(init=False)
    user_changed: str = field(init=False)
    dead_letter: str = field(init=False)

    def __post_init__(self) -> None:
        if not _LEGAL_PREFIX.fullmatch(self.prefix):
            raise ValueError(f"illegal Kafka topic prefix: {self.prefix!r}")
        for name in ("sdk_events", "commands", "import_rows", "user_changed", "dead_letter"):
            object.__setattr__(self, name, self.prefix + name.replace("_", "-"))

    @property
    def inbound(self) -> tuple[str, str, str]:
        """The topics the service consumes, in the order of `INBOUND_KINDS`."""
        return (self.sdk_events, self.commands, self.import_rows)

    def kind(self, topic: str) -> InboundKind:
        """Which message union a record of `topic` holds (for `parse_inbound`)."""
        for kind, name in zip(INBOUND_KINDS, self.inbound, strict=True):
            if topic == name:
                return kind
        raise ValueError(f"not an inbound topic of prefix {self.prefix!r}: {topic!r}")
