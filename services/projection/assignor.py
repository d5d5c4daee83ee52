"""Which instance of the consumer group applies which partitions: by load, co-partitioned.

Two rules, in this order:

1. **Co-partitioning.** Partition p of every inbound topic goes to the same instance: a
   channel's facts on all three topics meet in one merge there (merge.py, docs/decisions.md
   "Live order equals replay order"). So the unit assigned is a partition *number*.
2. **Balance.** The bench stream's channels are skewed (the partition key is the channel
   id, and one channel alone can be ~10 % of the traffic), so the range assignor's
   contiguous blocks gave one of two instances 59 % of the facts, and the group went at
   that instance's pace (docs/decisions.md, "Live with several projection processes").
   Here each partition number is weighed and the numbers are dealt out greedily, the
   heaviest first, each to the instance with the least weight so far.

Where the weights come from: the group leader decides alone, in a synchronous call, so
each member measures before it joins (`Projection.measure_load`, from the rebalance
listener) and sends what it measured in its subscription's `user_data`:

- the **backlog** of partition p: broker end offset − offset stored in PostgreSQL, summed
  over the inbound topics (the work waiting now), and
- the records **applied** so far (the stored offsets: the partition's long-run share of
  the traffic, what it will likely carry next).

The weight is their sum, i.e. every record the partition ever carried, applied or not.
Applying records moves them from one term to the other, so the weight does not drift while
the group works, and the same partitions weigh the same whichever member measured: a member
that joins later sees what the others have meanwhile applied and still agrees. The leader
takes, per partition, the largest weight any member sent (members that could not measure
send nothing). Without any data (a first start on empty topics, a member that failed to
measure alone) every weight is 0 and the greedy deal falls back to round-robin by
partition number; ties are broken by partition number and member id, so the same input
always gives the same assignment.

One assignor is offered, not this one and `range` as a fallback: tansu holds a join that
offers two for the whole rebalance timeout (10 s) instead of half the session (5 s), so
every start and rebalance paused consumption 5 s longer (measured with two members, both
ways). A group's members must agree on one: during a rolling upgrade from instances that
only offer `range`, run the new ones with UNIFIER_PARTITION_ASSIGNOR=range, and switch once
all are new (docs/operations.md, "Co-partitioning and balance").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

log = logging.getLogger("unifier.projection")

Load = tuple[int, int]
"""(backlog, applied) of one partition number, summed over the inbound topics."""


def balance(weights: Mapping[int, int], members: Iterable[str]) -> dict[str, list[int]]:
    """Deal the partition numbers out to `members`: heaviest first (ties: lower number
    first), each to the member with the least weight so far (ties: fewer partitions, then
    lower member id). Pure and deterministic; with all weights 0 it is round-robin."""
    owned: dict[str, list[int]] = {m: [] for m in sorted(set(members))}
    if not owned:
        return {}
    load = dict.fromkeys(owned, 0)
    for p in sorted(weights, key=lambda p: (-weights[p], p)):
        member = min(owned, key=lambda m: (load[m], len(owned[m]), m))
        owned[member].append(p)
        load[member] += weights[p]
    return {m: sorted(ps) for m, ps in owned.items()}


def weights_of(loads: Iterable[Mapping[int, Load]], partitions: Iterable[int]) -> dict[int, int]:
    """Weight of each partition number: backlog + applied, the largest any member sent."""
    weights = dict.fromkeys(partitions, 0)
    for member in loads:
        for p, (backlog, applied) in member.items():
            if p in weights:
                weights[p] = max(weights[p], backlog + applied)
    return weights


def encode_loads(loads: Mapping[int, Load]) -> bytes:
    """`user_data` of a member: {"v": 1, "loads": {"<partition>": [backlog, applied]}}."""
    return orjson.dumps({"v": 1, "loads": {str(p): list(bl) for p, bl in sorted(loads.items())}})


def decode_loads(data: bytes | None) -> dict[int, Load]:
    """What `encode_loads` wrote; {} for anything else (an empty or foreign user_data)."""
    if not data:
        return {}
    try:
        body: Any = orjson.loads(data)
        return {int(p): (max(int(b), 0), max(int(a), 0)) for p, (b, a) in body["loads"].items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        log.warning("a group member sent load data this assignor cannot read; counted as none")
        return {}


class LoadBalancingAssignor(AbstractPartitionAssignor):
    """aiokafka's assignor interface (classmethods there) implemented on an instance, one
    per consumer: `loads` is what this member measured last, sent at its next join."""

    name = "unifier-load"
    version = 0

    def __init__(self) -> None:
        self.loads: dict[int, Load] = {}

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:  # type: ignore[override]
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), encode_loads(self.loads))

    def assign(  # type: ignore[override]
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        # Every member subscribes to the inbound topics (all with the same partition
        # count); a number a topic lacks is simply not assigned for that topic.
        topics = sorted({t for m in members.values() for t in m.subscription})
        numbers = {t: set(cluster.partitions_for_topic(t) or ()) for t in topics}
        weights = weights_of((decode_loads(m.user_data) for m in members.values()), set().union(*numbers.values()))
        dealt = balance(weights, members)
        log.info("partitions by load %s: %s", {p: w for p, w in sorted(weights.items())}, dealt)
        return {
            member: ConsumerProtocolMemberAssignment(self.version, [
                (t, [p for p in dealt[member] if p in numbers[t]]) for t in sorted(members[member].subscription)
            ], b"")
            for member in members
        }

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:  # type: ignore[override]
        pass


def strategies(name: str, balancing: LoadBalancingAssignor) -> Sequence[Any]:
    """The consumer's `partition_assignment_strategy` for UNIFIER_PARTITION_ASSIGNOR."""
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

    return (balancing,) if name == "load" else (RangePartitionAssignor,)
