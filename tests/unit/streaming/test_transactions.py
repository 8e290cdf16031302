"""The pure parts of exactly-once (pipeline.streaming.transactions): librdkafka's group
metadata bytes, what a transaction commits, and the order of commit, store and acks, with
a recording producer in place of librdkafka's."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from pipeline.settings import Settings
from pipeline.streaming import transactions
from pipeline.streaming.dead_letters import DeadLetters
from pipeline.streaming.memory import MemoryPartitionStore
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import GroupMember
from pipeline.streaming.processing import Event, RowBatch
from pipeline.streaming.producer import BatchProducer, Delivered, Outgoing, ProducerRecord
from pipeline.streaming.transactions import (
    ExactlyOnce,
    GroupMetadataMismatch,
    ReadPositions,
    Transaction,
    TransactionalProducer,
    check_group_metadata,
    group_metadata,
    transactional_id,
)

# No broker is needed to make a consumer's group metadata; none is asked.
OFFLINE = {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}
MEMBER = GroupMember("shop", 7, "member-1", None)


def test_the_encoding_is_librdkafkas_for_a_consumer_that_has_not_joined() -> None:
    check_group_metadata(OFFLINE, "shop-pipeline", None)
    check_group_metadata(OFFLINE, "shop-pipeline", "worker-1")


def test_a_different_encoding_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions, "group_metadata", lambda member: b"CGMDv3:")
    with pytest.raises(GroupMetadataMismatch):
        check_group_metadata(OFFLINE, "shop-pipeline", None)


def test_a_members_generation_and_ids_are_in_librdkafkas_layout() -> None:
    generation = struct.pack("=i", 7)
    assert group_metadata(MEMBER) == b"CGMDv2:" + generation + b"shop\0member-1\0\x01"
    static = GroupMember("shop", 7, "member-1", "worker-1")
    assert group_metadata(static) == b"CGMDv2:" + generation + b"shop\0member-1\0\x00worker-1\0"


def test_the_transactional_id_survives_a_restart_and_differs_between_workers() -> None:
    one = Settings(app_id="shop", data_dir=Path("/data/a"))
    assert transactional_id(one) == transactional_id(
        Settings(app_id="shop", data_dir=Path("/data/a"))
    )
    assert transactional_id(one) != transactional_id(
        Settings(app_id="shop", data_dir=Path("/data/b"))
    )
    assert transactional_id(Settings(app_id="shop", worker_id="w1")) == "shop-w1"


@dataclass
class Message:
    offset: int
    topic: str = "order_created"
    partition: int = 3
    key: bytes = b"u1"
    value: bytes = b"v"
    headers: Any = None


@dataclass
class FakeEvent:
    message: Message


def events(*offsets: int, partition: int = 3) -> list[Event]:
    return [cast(Event, FakeEvent(Message(offset, partition=partition))) for offset in offsets]


def test_a_transaction_commits_the_offset_after_the_last_event_of_each_partition() -> None:
    transaction = Transaction(MEMBER)
    arrivals = RecordingArrivals()
    transaction.add(transactions.Settled(arrivals, events(4, 5), "orders"))
    transaction.add(transactions.Settled(arrivals, events(9, partition=0), "orders"))
    transaction.add(transactions.Settled(arrivals, events(6), "orders"))
    offsets = ReadPositions({"order_created": {"orders"}}).offsets(transaction)
    assert offsets == {("order_created", 3): 7, ("order_created", 0): 10}
    assert transaction.events == 4


def test_a_topic_two_agents_read_commits_the_offset_of_the_one_behind() -> None:
    readers = ReadPositions({"order_created": {"orders", "notifications"}})
    arrivals = RecordingArrivals()
    first = Transaction(MEMBER)
    first.add(transactions.Settled(arrivals, events(4, 5, 6), "orders"))
    # Until the notifications agent settled an event of the partition: left as committed.
    assert readers.offsets(first) == {}
    second = Transaction(MEMBER)
    second.add(transactions.Settled(arrivals, events(4), "notifications"))
    second.add(transactions.Settled(arrivals, events(7, 8), "orders"))
    assert readers.offsets(second) == {("order_created", 3): 5}
    third = Transaction(MEMBER)
    third.add(transactions.Settled(arrivals, events(5, 6, 7, 8, 9), "notifications"))
    assert readers.offsets(third) == {("order_created", 3): 9}
    # A new membership starts over: positions of the old one say nothing of it.
    fourth = Transaction(GroupMember("shop", 8, "member-1", None))
    fourth.add(transactions.Settled(arrivals, events(9), "orders"))
    assert readers.offsets(fourth) == {}


def test_a_transaction_is_not_committed_under_another_membership() -> None:
    transaction = Transaction(MEMBER)
    assert transaction.fencing_error(MEMBER) is None
    assert transaction.fencing_error(GroupMember("shop", 8, "member-1", None)) is not None
    assert transaction.fencing_error(GroupMember("shop", -1, "", None)) is not None
    assert Transaction(GroupMember("shop", -1, "", None)).fencing_error(None) is not None


@dataclass
class RecordingProducer:
    log: list[Any] = field(default_factory=list)
    fail_commit: bool = False
    # Set: a commit waits for it (in its thread, as librdkafka's does for the broker).
    hold: threading.Event | None = None
    # Called as a transaction begins (in its thread, while the loop awaits it).
    on_begin: Callable[[], None] | None = None
    # Called as a transaction's offsets are sent (in its thread).
    on_offsets: Callable[[], None] | None = None

    def begin(self) -> None:
        self.log.append("begin")
        if self.on_begin is not None:
            self.on_begin()

    async def send(self, messages: Sequence[ProducerRecord]) -> asyncio.Future[Delivered]:
        self.log.append(("send", [m.topic for m in messages]))
        delivered: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        delivered.set_result({(m.topic, m.partition or 0): 20 + i for i, m in enumerate(messages)})
        return delivered

    def send_offsets(self, offsets: Mapping[tuple[str, int], int], metadata: bytes) -> None:
        self.log.append(("offsets", dict(offsets), metadata))
        if self.on_offsets is not None:
            self.on_offsets()

    def commit(self) -> None:
        if self.hold is not None:
            self.hold.wait(5)
        if self.fail_commit:
            raise RuntimeError("fenced")
        self.log.append("commit")

    def abort(self, timeout: float) -> None:
        self.log.append("abort")


@dataclass
class RecordingArrivals:
    acked: list[int] = field(default_factory=list)

    async def take(self, limit: int) -> list[Event]:
        return []

    def ack(self, event: Event) -> None:
        self.acked.append(event.message.offset)


def exactly_once(producer: RecordingProducer, member: GroupMember = MEMBER) -> ExactlyOnce:
    dead_letters = DeadLetters(cast(BatchProducer, None), "shop")
    return ExactlyOnce(
        cast(TransactionalProducer, producer),
        dead_letters,
        lambda: member,
        Metrics(),
        {"order_created": {"orders"}},
    )


def stock_rows(
    settlement: ExactlyOnce,
    table: MemoryPartitionStore,
    event: Event,
    delta: int,
    sku: bytes = b"sku-1",
) -> RowBatch[int]:
    rows = RowBatch(
        cast(Any, table),
        int,
        lambda row: str(row).encode(),
        settlement.send,
        unsettled=settlement.unsettled(table),
    )
    rows.put(sku, (rows.get(sku, event) or 0) + delta, event)
    return rows


def test_rows_are_stored_and_events_acknowledged_only_after_the_commit() -> None:
    producer, table, arrivals = (
        RecordingProducer(),
        MemoryPartitionStore("stock-changelog"),
        RecordingArrivals(),
    )
    settlement = exactly_once(producer)

    async def scenario() -> None:
        first, second = events(4), events(5)
        rows = stock_rows(settlement, table, first[0], 5)
        prepared = await rows.send([Outgoing("stock_levels", b"sku-1", b"5")])
        assert producer.log == []  # nothing is sent while a batch is prepared
        await settlement.settle(arrivals, first, prepared, "orders")
        # A later batch reads the row from the open transaction, not the store.
        later = stock_rows(settlement, table, second[0], -2)
        assert later.pending[b"sku-1"][0] == 3
        await settlement.settle(arrivals, second, await later.send([]), "orders")
        assert table.rows() == {} and arrivals.acked == []
        await settlement.commit()

    asyncio.run(scenario())
    assert producer.log == [
        "begin",
        ("send", ["stock_levels"]),
        ("send", ["stock-changelog"]),
        ("send", []),
        ("send", ["stock-changelog"]),
        ("offsets", {("order_created", 3): 6}, group_metadata(MEMBER)),
        "commit",
    ]
    assert table.rows() == {b"sku-1": b"3"}
    assert arrivals.acked == [4, 5]
    assert settlement.unsettled(table) == {}


def test_a_dead_letter_is_committed_with_its_events_offset() -> None:
    producer, arrivals = RecordingProducer(), RecordingArrivals()
    settlement = exactly_once(producer)

    async def scenario() -> None:
        await settlement.dead_letter(arrivals, events(8)[0], ValueError(), 1, "orders")
        assert arrivals.acked == []
        await settlement.commit()

    asyncio.run(scenario())
    assert producer.log[1] == ("send", ["order_created.dlq"])
    assert producer.log[2][:2] == ("offsets", {("order_created", 3): 9})
    assert producer.log[3] == "commit"
    assert arrivals.acked == [8]


class Exited(Exception):
    pass


def exit_raises(code: int) -> None:
    raise Exited(code)


@pytest.mark.parametrize(
    "fenced", ["by the broker", "by a new generation", "by a new generation while offsets go"]
)
def test_a_transaction_that_cannot_commit_is_aborted_and_nothing_is_stored(
    monkeypatch: pytest.MonkeyPatch, fenced: str
) -> None:
    monkeypatch.setattr(transactions.os, "_exit", exit_raises)
    producer, table, arrivals = (
        RecordingProducer(),
        MemoryPartitionStore("stock-changelog"),
        RecordingArrivals(),
    )
    member = [MEMBER]
    settlement = exactly_once(producer)
    settlement.member = lambda: member[0]
    producer.fail_commit = fenced == "by the broker"
    if fenced == "by a new generation while offsets go":
        producer.on_offsets = lambda: member.__setitem__(0, GroupMember("shop", 8, "m-1", None))

    async def scenario() -> None:
        rows = stock_rows(settlement, table, events(4)[0], 5)
        await settlement.settle(arrivals, events(4), await rows.send([]), "orders")
        if fenced == "by a new generation":
            member[0] = GroupMember("shop", 8, "member-1", None)
        with pytest.raises(Exited):
            await settlement.commit()

    asyncio.run(scenario())
    assert producer.log[-1] == "abort" and "commit" not in producer.log
    assert table.rows() == {} and arrivals.acked == []


def test_a_batch_settled_during_a_commit_goes_into_the_next_transaction() -> None:
    """The agents are not held up by a commit: their batches wait for the next
    transaction, their rows readable meanwhile."""
    producer, table, arrivals = (
        RecordingProducer(),
        MemoryPartitionStore("stock-changelog"),
        RecordingArrivals(),
    )
    producer.hold = threading.Event()
    settlement = exactly_once(producer)

    async def scenario() -> None:
        first, second = events(4), events(5)
        rows = stock_rows(settlement, table, first[0], 5)
        await settlement.settle(arrivals, first, await rows.send([]), "orders")
        committing = asyncio.ensure_future(settlement.commit())
        await asyncio.sleep(0.05)  # the commit waits for the broker
        later = stock_rows(settlement, table, second[0], -2)
        assert later.pending[b"sku-1"][0] == 3
        await settlement.settle(arrivals, second, await later.send([]), "orders")
        # begin, the first batch's two sends and its offsets: nothing new
        assert len(producer.log) == 4
        producer.hold.set()
        await committing
        assert arrivals.acked == [4] and table.rows() == {b"sku-1": b"5"}
        assert settlement.unsettled(table) == {b"sku-1": 3}  # the second, not stored yet
        await settlement.commit()

    asyncio.run(scenario())
    names = [entry if isinstance(entry, str) else entry[0] for entry in producer.log[3:]]
    assert names == ["offsets", "commit", "begin", "send", "send", "offsets", "commit"]
    assert producer.log[-2][1] == {("order_created", 3): 6}
    assert arrivals.acked == [4, 5] and table.rows() == {b"sku-1": b"3"}


def test_the_batches_settled_during_a_commit_stay_readable_while_handed_over() -> None:
    """After a commit, the batches that settled during it go into the next transaction one
    at a time, each hand-over waiting for librdkafka; meanwhile the agents prepare their
    next batches, which must still read the rows of every one of them (read from the store
    instead, a row would be stale: an update lost)."""
    producer, table, arrivals = (
        RecordingProducer(),
        MemoryPartitionStore("stock-changelog"),
        RecordingArrivals(),
    )
    producer.hold = threading.Event()
    settlement = exactly_once(producer)
    readable: list[dict[bytes, Any]] = []

    async def scenario() -> None:
        rows = stock_rows(settlement, table, events(4)[0], 5)
        await settlement.settle(arrivals, events(4), await rows.send([]), "orders")
        committing = asyncio.ensure_future(settlement.commit())
        await asyncio.sleep(0.05)  # the commit waits for the broker
        for offset, sku in ((5, b"sku-2"), (6, b"sku-3")):
            later = stock_rows(settlement, table, events(offset)[0], 1, sku)
            await settlement.settle(arrivals, events(offset), await later.send([]), "orders")
        producer.on_begin = lambda: readable.append(dict(settlement.unsettled(table) or {}))
        producer.hold.set()
        await committing

    asyncio.run(scenario())
    assert readable == [{b"sku-2": 1, b"sku-3": 1}]


def test_a_commit_that_never_completes_fails_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions.os, "_exit", exit_raises)
    monkeypatch.setattr(transactions, "COMMIT_DEADLINE_S", 0.1)
    producer, table, arrivals = (
        RecordingProducer(),
        MemoryPartitionStore("stock-changelog"),
        RecordingArrivals(),
    )
    producer.hold = threading.Event()  # never set: the broker never answers
    settlement = exactly_once(producer)

    async def scenario() -> None:
        rows = stock_rows(settlement, table, events(4)[0], 5)
        await settlement.settle(arrivals, events(4), await rows.send([]), "orders")
        with pytest.raises(Exited):
            await settlement.commit()

    asyncio.run(scenario())
    producer.hold.set()
    assert producer.log[-1] == "abort"
    assert table.rows() == {} and arrivals.acked == []


@dataclass
class Listed:
    """What the listing says of one partition (TopicPartition's error is read-only)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None


class ListingAdmin:
    """An admin client whose offset listings report the partitions asked for as pending
    in a transaction for the first ``pending_for`` listings, then not."""

    def __init__(self, pending_for: int, failure: KafkaError | None = None) -> None:
        self.pending_for = pending_for
        self.failure = failure
        self.requests: list[tuple[list[ConsumerGroupTopicPartitions], dict[str, Any]]] = []

    def list_consumer_group_offsets(
        self, request: list[ConsumerGroupTopicPartitions], **options: Any
    ) -> dict[str, Future[SimpleNamespace]]:
        self.requests.append((request, options))
        (asked,) = request
        future: Future[SimpleNamespace] = Future()
        if self.failure is not None:
            future.set_exception(KafkaException(self.failure))
            return {asked.group_id: future}
        pending = len(self.requests) <= self.pending_for
        error = KafkaError(KafkaError.UNSTABLE_OFFSET_COMMIT) if pending else None
        listed = [Listed(tp.topic, tp.partition, 5, error) for tp in asked.topic_partitions or []]
        future.set_result(SimpleNamespace(group_id=asked.group_id, topic_partitions=listed))
        return {asked.group_id: future}


def test_a_worker_taking_partitions_over_waits_while_a_transactions_offsets_are_pending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    admin = ListingAdmin(pending_for=3)
    waited = transactions.wait_for_stable_offsets(
        cast(AdminClient, admin), "shop", {("orders", 1), ("orders", 0)}
    )
    assert len(admin.requests) == 4
    assert waited >= 3 * transactions.STABLE_OFFSETS_POLL_S
    request, options = admin.requests[0]
    assert options["require_stable"] is True
    assert [
        (asked.group_id, [(tp.topic, tp.partition) for tp in asked.topic_partitions or []])
        for asked in request
    ] == [("shop", [("orders", 0), ("orders", 1)])]
    assert "settled after" in caplog.text


def test_stable_offsets_are_not_waited_for_and_no_partitions_ask_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    admin = ListingAdmin(pending_for=0)
    assert transactions.wait_for_stable_offsets(cast(AdminClient, admin), "shop", {("o", 0)}) < 1
    assert len(admin.requests) == 1
    assert transactions.wait_for_stable_offsets(cast(AdminClient, admin), "shop", set()) == 0
    assert len(admin.requests) == 1
    assert "settled" not in caplog.text


def test_offsets_pending_past_the_timeout_are_read_as_they_are_with_an_error_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = ListingAdmin(pending_for=1_000_000)
    waited = transactions.wait_for_stable_offsets(
        cast(AdminClient, admin), "shop", {("orders", 2)}, timeout=0.2
    )
    assert 0.2 < waited < 5
    assert "orders[2]" in caplog.text and "still pending" in caplog.text


def test_a_listing_that_cannot_succeed_is_an_error() -> None:
    admin = ListingAdmin(pending_for=0, failure=KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED))
    with pytest.raises(KafkaException):
        transactions.wait_for_stable_offsets(cast(AdminClient, admin), "shop", {("o", 0)})


def test_a_row_deleted_in_the_open_transaction_reads_as_deleted_until_it_commits() -> None:
    producer, table, arrivals = (
        RecordingProducer(),
        MemoryPartitionStore("stock-changelog"),
        RecordingArrivals(),
    )
    table.write(3, [(b"sku-1", b"7")])
    settlement = exactly_once(producer)

    async def scenario() -> None:
        first, second = events(4), events(5)
        rows = RowBatch(
            cast(Any, table),
            int,
            str.encode,
            settlement.send,
            unsettled=settlement.unsettled(table),
        )
        rows.delete(b"sku-1", first[0])
        await settlement.settle(arrivals, first, await rows.send([]), "orders")
        later = stock_rows(settlement, table, second[0], 1)
        assert later.pending[b"sku-1"][0] == 1  # from no row, not from the stored 7
        assert table.rows() == {b"sku-1": b"7"}
        await settlement.settle(arrivals, second, await later.send([]), "orders")
        await settlement.commit()

    asyncio.run(scenario())
    assert table.rows() == {b"sku-1": b"1"}
