"""The load-balancing assignor (issue 14, live ≥ 20,000 events/s with several projection
processes): partition p of every inbound topic on one member (co-partitioning, the
canonical merge needs it: docs/decisions.md "Live order equals replay order"), the
partition numbers dealt out by weight so that no member carries most of a skewed stream,
round-robin without data, the same answer for the same input."""

from __future__ import annotations

import itertools

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from contracts.topics import Topics
from services.projection.assignor import (
    LoadBalancingAssignor,
    balance,
    decode_loads,
    encode_loads,
    weights_of,
)

TOPICS = Topics("t_assign.")
INBOUND = sorted(TOPICS.inbound)
# Facts per partition of the bench stream's kind (100 channels, the largest ~10 %): the
# range assignor's blocks 0–5 / 6–11 carry 40.8 % / 59.2 % of it.
SKEWED = {0: 6_900, 1: 7_100, 2: 5_800, 3: 6_400, 4: 7_300, 5: 7_275,
          6: 9_500, 7: 12_900, 8: 7_700, 9: 8_425, 10: 9_100, 11: 11_600}


class Cluster:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))


def member(loads: dict[int, tuple[int, int]] | None) -> ConsumerProtocolMemberMetadata:
    """A member's subscription as the leader receives it (encoded and decoded on the wire)."""
    a = LoadBalancingAssignor()
    a.loads = loads or {}
    return ConsumerProtocolMemberMetadata.decode(a.metadata(INBOUND).encode())


def shares(dealt: dict[str, list[int]], weights: dict[int, int]) -> list[float]:
    total = sum(weights.values())
    return sorted(sum(weights[p] for p in ps) / total for ps in dealt.values())


def test_skewed_partitions_split_evenly_where_range_blocks_do_not() -> None:
    range_blocks = [sum(SKEWED[p] for p in range(6)), sum(SKEWED[p] for p in range(6, 12))]
    assert max(range_blocks) / sum(SKEWED.values()) > 0.59  # what the range assignor gave
    two = balance(SKEWED, ["m-b", "m-a"])
    assert max(shares(two, SKEWED)) < 0.51
    three = balance(SKEWED, ["m-a", "m-b", "m-c"])
    assert max(shares(three, SKEWED)) < 0.35
    assert sorted(itertools.chain(*two.values())) == list(range(12))  # each number exactly once


def test_without_data_it_is_round_robin_by_partition_number() -> None:
    dealt = balance(dict.fromkeys(range(12), 0), ["m-b", "m-a", "m-c"])
    assert dealt == {"m-a": [0, 3, 6, 9], "m-b": [1, 4, 7, 10], "m-c": [2, 5, 8, 11]}


def test_same_input_same_assignment_whatever_the_order() -> None:
    reordered = dict(reversed(list(SKEWED.items())))
    assert balance(SKEWED, ["m-a", "m-b"]) == balance(reordered, ["m-b", "m-a", "m-a"])
    ties = dict.fromkeys(range(4), 5)  # equal weights: lower partition, then lower member id
    assert balance(ties, ["m-b", "m-a"]) == {"m-a": [0, 2], "m-b": [1, 3]}


def test_weight_is_backlog_plus_applied_the_largest_any_member_sent() -> None:
    # Applying moves records from backlog to applied: the weight stays, whoever measured when.
    early = {0: (100, 0), 1: (10, 0)}
    late = {0: (40, 60), 1: (0, 10), 7: (5, 5)}  # 7: not a partition of these topics
    assert weights_of([early, late, {}], range(3)) == {0: 100, 1: 10, 2: 0}


def test_every_topic_partition_once_and_co_partitioned() -> None:
    loads = {p: (w, 0) for p, w in SKEWED.items()}
    members = {"m-1": member(loads), "m-2": member(None), "m-3": member({0: (1, 1)})}
    assigned = LoadBalancingAssignor().assign(Cluster(12), members)  # type: ignore[arg-type]
    owners: dict[tuple[str, int], str] = {}
    for m, a in assigned.items():
        numbers = {t: sorted(ps) for t, ps in a.assignment}
        assert sorted(numbers) == INBOUND
        assert len({tuple(ps) for ps in numbers.values()}) == 1, f"{m} not co-partitioned: {numbers}"
        for t, ps in a.assignment:
            for p in ps:
                assert (t, p) not in owners
                owners[t, p] = m
    assert len(owners) == 12 * len(INBOUND)
    by_member = {m: [p for t, p in owners if owners[t, p] == m and t == INBOUND[0]] for m in members}
    assert max(shares(by_member, SKEWED)) < 0.35


def test_load_data_round_trips_and_foreign_data_counts_as_none() -> None:
    loads = {3: (12, 40), 0: (0, 7)}
    assert decode_loads(encode_loads(loads)) == loads
    assert decode_loads(member(loads).user_data) == loads
    assert decode_loads(b"") == {}
    assert decode_loads(b"\x00\x01range") == {}
    assert decode_loads(b'{"v": 1, "loads": {"x": [1, 2]}}') == {}
