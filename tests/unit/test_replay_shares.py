"""Flow 5 (replay/shards.py): workers share the log by partition number, balanced by
records, every partition number read by exactly one worker."""

from hypothesis import given
from hypothesis import strategies as st

from services.replay.shards import share_partitions


def test_partitions_are_shared_by_their_records_largest_first() -> None:
    stops = {("sdk", 0): 900, ("cmd", 0): 100, ("sdk", 1): 600, ("sdk", 2): 500, ("sdk", 3): 10, ("cmd", 3): 0}
    assert share_partitions(stops, 2) == [[0, 3], [1, 2]]  # 1,010 and 1,100 records


@given(st.dictionaries(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 15)), st.integers(0, 10**6)),
       st.integers(1, 8))
def test_every_partition_number_goes_to_exactly_one_worker(stops: dict[tuple[str, int], int], workers: int) -> None:
    shares = share_partitions(stops, workers)
    assert len(shares) == workers
    numbers = [p for share in shares for p in share]
    assert sorted(numbers) == sorted({p for _t, p in stops})


def _greedy(stops: dict[tuple[str, int], int], workers: int) -> list[int]:
    """The loads of the largest-first pass alone (the shares before session 14)."""
    size: dict[int, int] = {}
    for (_t, p), n in stops.items():
        size[p] = size.get(p, 0) + n
    load = [0] * workers
    for p in sorted(size, key=lambda p: (-size[p], p)):
        load[min(range(workers), key=lambda w: (load[w], w))] += size[p]
    return load


def _loads(stops: dict[tuple[str, int], int], shares: list[list[int]]) -> list[int]:
    return [sum(n for (_t, p), n in stops.items() if p in share) for share in shares]


def test_a_swap_evens_out_what_the_largest_first_pass_left() -> None:
    # Largest first: {5, 3} and {4, 3, 3}, 8 and 10 records; 4 and 3 swapped: 9 and 9.
    stops = {("sdk", 0): 5, ("sdk", 1): 4, ("sdk", 2): 3, ("sdk", 3): 3, ("sdk", 4): 3}
    shares = share_partitions(stops, 2)
    assert _loads(stops, shares) == [9, 9]
    assert shares == [[0, 1], [2, 3, 4]]


@given(st.dictionaries(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 15)), st.integers(0, 10**6)),
       st.integers(1, 8))
def test_no_share_is_larger_than_the_largest_first_pass_made_it_and_the_lightest_is_shard_0(
    stops: dict[tuple[str, int], int], workers: int,
) -> None:
    loads = _loads(stops, share_partitions(stops, workers))
    assert max(loads) <= max(_greedy(stops, workers))
    assert loads == sorted(loads)
