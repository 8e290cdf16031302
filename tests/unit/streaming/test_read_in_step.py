from __future__ import annotations

from collections.abc import Callable, Set

from pipeline.streaming.read_in_step import ReadInStep, TopicPartition

ORDERS, USERS, STOCK = "order_created", "user_registered", "stock_adjusted"
ALL = {(ORDERS, 0), (USERS, 0), (ORDERS, 1), (USERS, 1), (STOCK, 0)}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def in_step(max_wait_s: float = 10.0, clock: Clock | None = None) -> ReadInStep:
    return ReadInStep([{USERS, ORDERS}], max_wait_s, clock or Clock())


def behind(*tps: TopicPartition) -> Callable[[TopicPartition], bool]:
    return lambda tp: tp in tps


def waiting(
    reads: ReadInStep,
    behind: Callable[[TopicPartition], bool],
    requested: Set[TopicPartition] = ALL,
) -> set[TopicPartition]:
    """The requested partitions a fetch leaves out (it takes as many records as it would)."""
    partitions, max_records = reads.next_fetch(requested, behind, 500)
    assert max_records == 500
    return set(requested) - partitions


def test_a_partition_read_ahead_waits_for_its_co_partitioned_peer_with_records_to_read() -> None:
    reads = in_step()
    reads.delivered((ORDERS, 0), 5_000)
    reads.delivered((USERS, 0), 1_000)
    reads.delivered((STOCK, 0), 9_000)
    assert waiting(reads, behind((USERS, 0))) == {(ORDERS, 0)}
    # Caught up with: the peer has nothing more to read.
    assert waiting(reads, behind()) == set()
    # Read past it: the roles swap, once the other has records to read.
    reads.delivered((USERS, 0), 6_000)
    assert waiting(reads, behind((USERS, 0))) == set()
    assert waiting(reads, behind((ORDERS, 0))) == {(USERS, 0)}


def test_only_the_peer_of_the_same_partition_number_is_waited_for() -> None:
    reads = in_step()
    reads.delivered((ORDERS, 0), 5_000)
    reads.delivered((USERS, 1), 1_000)
    assert waiting(reads, behind((USERS, 1))) == set()


def test_a_peer_paused_while_its_agents_queues_drain_is_waited_for_one_not_fetched_is_not() -> None:
    """A catching-up join's queue fills with the registrations, which pauses them: the
    orders must not run ahead meanwhile. A partition neither requested nor paused (not
    fetched, as in a rebalance) is not waited for."""
    reads = in_step()
    reads.delivered((ORDERS, 0), 5_000)
    reads.delivered((USERS, 0), 1_000)
    requested = ALL - {(USERS, 0)}
    partitions, _ = reads.next_fetch(requested, behind((USERS, 0)), 500, paused={(USERS, 0)})
    assert partitions == requested - {(ORDERS, 0)}
    assert waiting(reads, behind((USERS, 0)), requested=requested) == set()


def test_a_partition_with_records_to_read_and_no_stream_time_is_fetched_first_one_record() -> None:
    """At an assignment nothing has a stream time: one record of each partition says where
    it stands before any is read further."""
    reads = in_step()
    unknown = {(ORDERS, 0), (USERS, 0), (ORDERS, 1), (USERS, 1)}
    assert reads.next_fetch(ALL, behind(*ALL), 500) == (unknown, 1)
    reads.delivered((ORDERS, 0), 5_000)
    reads.delivered((USERS, 1), 1_000)
    assert reads.next_fetch(ALL, behind(*ALL), 500) == ({(USERS, 0), (ORDERS, 1)}, 1)
    # One without records to read is not fetched for it: nothing waits for it either.
    assert reads.next_fetch(ALL, behind((ORDERS, 0), (USERS, 1)), 500) == (ALL, 500)
    reads.delivered((USERS, 0), 1_000)
    reads.delivered((ORDERS, 1), 5_000)
    assert waiting(reads, behind(*ALL)) == {(ORDERS, 0), (ORDERS, 1)}


def test_a_partition_is_fetched_for_its_stream_time_at_most_the_wait_bound() -> None:
    clock = Clock()
    reads = in_step(max_wait_s=10.0, clock=clock)
    stuck = behind((USERS, 0))
    assert reads.next_fetch(ALL, stuck, 500) == ({(USERS, 0)}, 1)
    clock.now += 10.1
    assert reads.next_fetch(ALL, stuck, 500) == (ALL, 500)


def test_of_topics_read_in_step_the_one_read_to_the_earliest_time_never_waits() -> None:
    reads = ReadInStep([{USERS, ORDERS}, {ORDERS, STOCK}], 10.0, Clock())
    reads.delivered((STOCK, 0), 9_000)
    reads.delivered((ORDERS, 0), 5_000)
    reads.delivered((USERS, 0), 1_000)
    everything = behind((STOCK, 0), (ORDERS, 0), (USERS, 0))
    assert waiting(reads, everything) == {(STOCK, 0), (ORDERS, 0)}
    # USERS and STOCK are not read in step with each other, only each with ORDERS.
    assert waiting(reads, behind((USERS, 0), (STOCK, 0))) == {(ORDERS, 0)}


def test_stream_time_is_the_latest_timestamp_delivered() -> None:
    reads = in_step()
    reads.delivered((ORDERS, 0), 5_000)
    reads.delivered((ORDERS, 0), 4_000)  # an earlier CreateTime after a later one
    reads.delivered((USERS, 0), 4_500)
    assert waiting(reads, behind((USERS, 0))) == {(ORDERS, 0)}


def test_a_partition_waits_at_most_the_bound_while_its_peer_delivers_nothing() -> None:
    clock = Clock()
    reads = in_step(max_wait_s=10.0, clock=clock)
    reads.delivered((ORDERS, 0), 5_000)
    reads.delivered((USERS, 0), 1_000)
    stuck = behind((USERS, 0))
    assert waiting(reads, stuck) == {(ORDERS, 0)}
    clock.now += 9.9
    assert waiting(reads, stuck) == {(ORDERS, 0)}
    clock.now += 0.2
    assert waiting(reads, stuck) == set()
    # The peer delivers again, still behind: the wait starts afresh.
    reads.delivered((USERS, 0), 2_000)
    assert waiting(reads, stuck) == {(ORDERS, 0)}


def test_an_assignment_forgets_every_stream_time() -> None:
    reads = in_step()
    reads.delivered((ORDERS, 0), 5_000)
    reads.delivered((USERS, 0), 1_000)
    reads.restart()
    assert reads.next_fetch(ALL, behind((USERS, 0)), 500) == ({(USERS, 0)}, 1)
    assert waiting(reads, behind()) == set()


def test_no_wait_bound_or_no_join_reads_as_fetched() -> None:
    assert in_step().active
    assert not in_step(max_wait_s=0).active
    assert not ReadInStep([], 10.0).active
    assert not ReadInStep([{ORDERS}], 10.0).active
