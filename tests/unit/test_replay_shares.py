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
