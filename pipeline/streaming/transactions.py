"""Exactly-once processing (``PIPELINE_PROCESSING_GUARANTEE=exactly_once``): every
worker's outputs and consumed offsets in Kafka transactions of its own, as Kafka Streams'
``exactly_once_v2`` does (KIP-447).

One transactional producer per worker (``transactional_id``, stable across restarts, so a
restart fences the previous incarnation); one transaction per commit interval, across the
batches of every agent; each batch's derived events, dead letters and changelog records
handed over at settlement with its offsets; rows stored and events acknowledged only once
the transaction committed (``unsettled`` meanwhile). The offsets carry the group membership
(``group_metadata``, librdkafka's format written from aiokafka's membership), so a zombie's
commit is refused; a takeover waits for stable offsets; a failed transaction exits the
worker as a SIGKILL would. Why each, and what it costs: docs/guarantees.md ("Exactly-once").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import struct
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NoReturn

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from pipeline.settings import Settings
from pipeline.streaming.dead_letters import DeadLetters
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import Arrivals, Event, GroupMember, PartitionStore
from pipeline.streaming.processing import DELETED, Prepared, RowBatch
from pipeline.streaming.producer import (
    BatchProducer,
    Delivered,
    ProducerRecord,
    producer_config,
)

log = logging.getLogger(__name__)

# How a worker whose transaction failed exits (EX_TEMPFAIL: restart it).
EXIT_TRANSACTION_FAILED = 75
# The broker aborts a transaction left open this long (a worker that died with one open,
# unless it restarts first under the same transactional id). Until then read_committed
# readers of the partitions it wrote wait. It also bounds how long librdkafka retries a
# send while the broker is away (message.timeout.ms may not exceed it): a broker away
# longer fails the transaction, and the worker exits to be restarted. The Java client's
# default; 30 s was too short for a broker restart on a loaded machine here.
TRANSACTION_TIMEOUT_MS = 60_000
# How long the start-up calls (init_transactions) and one commit may take.
CALL_TIMEOUT_S = 30.0
# A transaction not committed this long after its interval ended has failed, whatever
# librdkafka is still waiting for (after a restart of the only broker, here, a commit
# once waited for ever although the broker was back): the worker exits, to be restarted.
COMMIT_DEADLINE_S = TRANSACTION_TIMEOUT_MS / 1000 + CALL_TIMEOUT_S

# While a transaction's offsets are pending, how often a worker taking over its partitions
# asks again; and how long it waits at most (the broker aborts a transaction left open past
# its timeout, which clears them).
STABLE_OFFSETS_POLL_S = 0.05
STABLE_OFFSETS_TIMEOUT_S = TRANSACTION_TIMEOUT_MS / 1000 + CALL_TIMEOUT_S

MAGIC = b"CGMDv2:"


def group_metadata(member: GroupMember) -> bytes:
    """``member`` as librdkafka serializes consumer group metadata
    (``rd_kafka_consumer_group_metadata_write``): ``CGMDv2:``, the generation id as a
    native-endian int32, the group id and the member id each NUL-terminated, then 1 when
    there is no group instance id, else 0 and the id NUL-terminated."""
    parts = [
        MAGIC,
        struct.pack("=i", member.generation_id),
        member.group_id.encode() + b"\0",
        member.member_id.encode() + b"\0",
    ]
    if member.group_instance_id is None:
        parts.append(b"\x01")
    else:
        parts += [b"\x00", member.group_instance_id.encode() + b"\0"]
    return b"".join(parts)


def wait_for_stable_offsets(
    admin: AdminClient,
    group: str,
    partitions: Collection[tuple[str, int]],
    timeout: float = STABLE_OFFSETS_TIMEOUT_S,
) -> float:
    """Wait until no transaction holds offsets of ``partitions`` pending in ``group``;
    return the seconds waited.

    A worker reads the committed offsets of the partitions it is assigned through aiokafka,
    whose OffsetFetch (v3) cannot ask for stable offsets (KIP-447's ``require_stable``).
    While the previous owner's commit is in doubt (its offsets sent, its markers not yet
    written) it would read the offsets from before that transaction, and restore the
    tables without the transaction's rows: it would process those events again, or miss
    their rows if the commit completed in between. librdkafka's admin client asks with
    ``require_stable`` and reports ``UNSTABLE_OFFSET_COMMIT`` per partition while such a
    transaction is pending; this asks again until none is. After ``timeout`` it logs and
    returns (only a broker that cannot complete or abort a transaction keeps its offsets
    pending that long)."""
    if not partitions:
        return 0.0
    request = [
        ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in sorted(partitions)])
    ]
    started = time.monotonic()
    was_pending = False
    while True:
        try:
            (future,) = admin.list_consumer_group_offsets(
                request, require_stable=True, request_timeout=CALL_TIMEOUT_S
            ).values()
            listed = future.result()
            pending = [
                f"{tp.topic}[{tp.partition}]"
                for tp in listed.topic_partitions or []
                if tp.error is not None and tp.error.code() == KafkaError.UNSTABLE_OFFSET_COMMIT
            ]
        except KafkaException as error:
            if not error.args[0].retriable():
                raise
            pending = [f"the group ({error})"]
        waited = time.monotonic() - started
        if not pending:
            if was_pending:
                log.info("offsets of a transaction in doubt are settled after %.2f s", waited)
            return waited
        was_pending = True
        if waited > timeout:
            log.error(
                "offsets still pending in a transaction after %.0f s, reading them as they are: %s",
                waited,
                ", ".join(pending),
            )
            return waited
        time.sleep(STABLE_OFFSETS_POLL_S)


class GroupMetadataMismatch(RuntimeError):
    """This librdkafka serializes consumer group metadata otherwise than we do."""


def check_group_metadata(config: Mapping[str, Any], group_id: str, instance: str | None) -> None:
    """Refuse to run unless ``group_metadata`` writes exactly the bytes a confluent-kafka
    consumer of the same group (and instance id) writes before it joins."""
    consumer = Consumer(
        {
            **config,
            "group.id": group_id,
            **({"group.instance.id": instance} if instance is not None else {}),
        }
    )
    try:
        theirs = consumer.consumer_group_metadata()
    finally:
        consumer.close()
    ours = group_metadata(GroupMember(group_id, -1, "", instance))
    if ours != theirs:
        raise GroupMetadataMismatch(
            f"librdkafka's consumer group metadata is {theirs!r}, ours {ours!r}: this "
            "confluent-kafka serializes it otherwise, and exactly_once would commit offsets "
            "without fencing; see pipeline.streaming.transactions"
        )


def transactional_id(settings: Settings) -> str:
    """The same for every incarnation of a worker: its worker id, else its state dir."""
    if settings.worker_id is not None:
        return f"{settings.app_id}-{settings.worker_id}"
    state = hashlib.sha256(str(settings.data_dir.absolute()).encode()).hexdigest()[:16]
    return f"{settings.app_id}-{state}"


def transactional_config(settings: Settings) -> dict[str, Any]:
    return {
        **producer_config(settings),
        "transactional.id": transactional_id(settings),
        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
    }


class TransactionalProducer(BatchProducer):
    """The worker's producer with librdkafka's transactional calls (blocking: call them
    off the event loop)."""

    def init(self) -> None:
        self._producer.init_transactions(CALL_TIMEOUT_S)

    def begin(self) -> None:
        """No request to the broker, but librdkafka waits for its main thread without a
        timeout: call it off the event loop too."""
        self._producer.begin_transaction()

    def send_offsets(self, offsets: Mapping[tuple[str, int], int], metadata: bytes) -> None:
        """Add ``offsets`` (next offsets to consume) under the group ``metadata`` to the
        open transaction, retrying while librdkafka says the error is retriable."""
        producer = self._producer
        positions = [TopicPartition(topic, p, offset) for (topic, p), offset in offsets.items()]
        if positions:
            _retrying(
                lambda: producer.send_offsets_to_transaction(positions, metadata, CALL_TIMEOUT_S),
                time.monotonic() + CALL_TIMEOUT_S,
            )

    def commit(self) -> None:
        """Commit the open transaction (librdkafka first waits for the delivery of every
        record in it), retrying while librdkafka says the error is retriable."""
        producer = self._producer
        _retrying(
            lambda: producer.commit_transaction(CALL_TIMEOUT_S), time.monotonic() + CALL_TIMEOUT_S
        )

    def abort(self, timeout: float) -> None:
        self._producer.abort_transaction(timeout)


def _retrying(call: Callable[[], None], deadline: float) -> None:
    while True:
        try:
            call()
            return
        except KafkaException as error:
            if not error.args[0].retriable() or time.monotonic() > deadline:
                raise
            log.warning("transaction call failed, retrying: %s", error)


@dataclass
class Settled:
    """A batch (or a dead letter) in the open transaction, stored and acknowledged once
    it committed."""

    arrivals: Arrivals
    events: Sequence[Event]
    agent: str  # which agent settled it
    rows: RowBatch[Any] | None = None
    changelog: asyncio.Future[Delivered] | None = None


# A source partition: (topic, partition).
Place = tuple[str, int]


@dataclass
class Transaction:
    """What one transaction holds: the batches settled in it and, per source partition
    and agent, the next offset to consume once it committed."""

    member: GroupMember | None
    positions: dict[Place, dict[str, int]] = field(default_factory=dict)
    batches: list[Settled] = field(default_factory=list)
    deliveries: list[asyncio.Future[Delivered]] = field(default_factory=list)

    def add(self, settled: Settled) -> None:
        self.batches.append(settled)
        positions = self.positions
        agent = settled.agent
        for event in settled.events:
            message = event.message
            place = (message.topic, message.partition)
            following = message.offset + 1
            by_agent = positions.get(place)
            if by_agent is None:
                by_agent = positions[place] = {}
            if following > by_agent.get(agent, -1):
                by_agent[agent] = following

    @property
    def events(self) -> int:
        return sum(len(batch.events) for batch in self.batches)

    def fencing_error(self, now: GroupMember | None) -> str | None:
        """Why the transaction must not be committed under the membership ``now``."""
        if self.member is None or self.member.generation_id < 0 or not self.member.member_id:
            return f"it was opened outside the group ({self.member})"
        if now != self.member:
            return f"the group membership changed from {self.member} to {now} while it was open"
        return None


class ReadPositions:
    """Per source partition, the next offset each agent reading it is to consume, within
    one group membership. A transaction commits the least of them: where two agents read
    a topic (orders and notifications read order_created), the one ahead would otherwise
    commit past what the other has not processed, lost to it after a crash. A partition
    not every reader has settled an event of since the membership began is left at its
    committed offset."""

    def __init__(self, readers: Mapping[str, Collection[str]]) -> None:
        self.readers = readers
        self.member: GroupMember | None = None
        self.positions: dict[Place, dict[str, int]] = {}

    def offsets(self, transaction: Transaction) -> dict[Place, int]:
        """What ``transaction`` commits, its positions now counted."""
        if transaction.member != self.member:
            self.member, self.positions = transaction.member, {}
        offsets = {}
        for place, by_agent in transaction.positions.items():
            known = self.positions.setdefault(place, {})
            for agent, following in by_agent.items():
                if following > known.get(agent, -1):
                    known[agent] = following
            readers = self.readers.get(place[0]) or known.keys()
            if all(agent in known for agent in readers):
                offsets[place] = min(known[agent] for agent in readers)
        return offsets


class ExactlyOnce:
    """The exactly-once ``Settlement`` (pipeline.streaming.processing): settles batches
    into the worker's open transaction; ``commit`` closes it, every commit interval
    (the worker engine's timer).

    A commit does not hold up the agents: batches settled while it waits for the broker
    are kept (their rows already readable by the batches after them) and handed to the
    next transaction as soon as the commit returns (librdkafka takes no records for the
    next transaction before)."""

    def __init__(
        self,
        producer: TransactionalProducer,
        dead_letters: DeadLetters,
        member: Callable[[], GroupMember | None],
        metrics: Metrics,
        readers: Mapping[str, Collection[str]],
    ) -> None:
        self.producer = producer
        self.dead_letters = dead_letters
        self.member = member
        self.metrics = metrics
        # Which agents read each source topic (its committed offset is the least of theirs).
        self.read_positions = ReadPositions(readers)
        self._open: Transaction | None = None
        # Set while the open transaction commits: what settles meanwhile waits here.
        self._committing = False
        self._waiting: list[tuple[Settled, Sequence[ProducerRecord]]] = []
        # Handing a batch to the transaction and starting or ending a commit exclude each
        # other: a batch's records and its offsets are in the same transaction.
        self._lock = asyncio.Lock()
        # By store (its id): the rows of batches settled and not stored yet.
        self._unsettled: dict[int, dict[bytes, Any]] = {}
        # librdkafka's transactional calls block: they run in a thread of their own, not
        # the loop's default executor, where they would queue behind whatever else waits
        # there (views ask for end offsets there, and while the broker is away hundreds of
        # such calls can wait: the commit, and every acknowledgement, waited minutes).
        self._calls = ThreadPoolExecutor(1, thread_name_prefix="transactions")

    async def _call(self, function: Callable[..., None], *args: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._calls, function, *args)

    async def start(self) -> None:
        """Fence out and abort what the worker's previous incarnation left open."""
        await self._call(self.producer.init)

    async def send(self, messages: Sequence[ProducerRecord]) -> asyncio.Future[Delivered]:
        """Nothing is sent while a batch is prepared: ``settle`` sends its records."""
        done: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        done.set_result({})
        return done

    def unsettled(self, store: PartitionStore) -> Mapping[bytes, Any] | None:
        return self._unsettled.setdefault(id(store), {})

    async def settle(
        self, arrivals: Arrivals, events: Sequence[Event], prepared: Prepared, agent: str
    ) -> None:
        records: Sequence[ProducerRecord] = prepared.derived
        if prepared.failed:
            records = [*records, *self.dead_letters.records(prepared.failed, agent)]
        await self._add(Settled(arrivals, events, agent, prepared.rows), records)
        self.dead_letters.report_all(prepared.failed)

    async def dead_letter(
        self, arrivals: Arrivals, event: Event, error: BaseException, attempts: int, agent: str
    ) -> None:
        message = event.message
        record = self.dead_letters.record(message, error, attempts, agent)
        await self._add(Settled(arrivals, [event], agent), [record])
        self.dead_letters.report(message, error, attempts)

    def _keep_rows(self, settled: Settled) -> None:
        rows = settled.rows
        if rows is not None:
            unsettled = self._unsettled.setdefault(id(rows.store), {})
            for key, (row, _) in rows.pending.items():
                unsettled[key] = DELETED if row is None else row

    async def _add(self, settled: Settled, records: Sequence[ProducerRecord]) -> None:
        async with self._lock:
            self._keep_rows(settled)
            if self._committing:
                self._waiting.append((settled, records))
            else:
                await self._hand_over(settled, records)

    async def _hand_over(self, settled: Settled, records: Sequence[ProducerRecord]) -> None:
        """``records`` and the batch's changelog records into the open transaction, with
        the batch's offsets (under the lock). A failure part-way through would leave part
        of the batch in the transaction: the transaction has failed."""
        try:
            if self._open is None:
                await self._call(self.producer.begin)
                self._open = Transaction(self.member())
            transaction = self._open
            transaction.deliveries.append(await self.producer.send(records))
            if settled.rows is not None:
                settled.changelog = await self.producer.send(settled.rows.changelog)
                transaction.deliveries.append(settled.changelog)
        except Exception as error:
            self._fail(error)
        transaction.add(settled)

    async def commit(self) -> None:
        """Commit the open transaction with its offsets, then store its rows and
        acknowledge its events; exit the worker if it cannot be committed."""
        async with self._lock:
            transaction = self._open
            if transaction is None:
                return
            self._committing = True
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._complete(transaction), COMMIT_DEADLINE_S)
        except Exception as error:  # a TimeoutError too
            self._fail(error)
        async with self._lock:
            self._open = None
            self._committing = False
            for batch in transaction.batches:
                if batch.rows is not None and batch.changelog is not None:
                    batch.rows.write(batch.changelog.result())
            # Now in the store; what settled during the commit is still to be stored, and
            # stays readable throughout: each hand-over below waits for librdkafka while
            # the agents prepare batches that read these rows.
            for rows in self._unsettled.values():
                rows.clear()
            waiting, self._waiting = self._waiting, []
            for settled, _ in waiting:
                self._keep_rows(settled)
            for settled, records in waiting:
                await self._hand_over(settled, records)
        self.metrics.transaction_committed(transaction.events, time.monotonic() - started)
        for batch in transaction.batches:
            ack = batch.arrivals.ack
            for event in batch.events:
                ack(event)

    async def _complete(self, transaction: Transaction) -> None:
        """Send the transaction's offsets under the membership it was opened in while its
        records are delivered, then commit it if that membership still holds.

        The offsets take two round trips (to the transaction's coordinator, then the
        group's), and the last batches' records are still on their way when the commit
        starts: done one after the other, the offsets' round trips added to every
        transaction's commit time, and to the latency of every event in it."""
        member = self._member_for(transaction)
        offsets = self.read_positions.offsets(transaction)
        sending = asyncio.ensure_future(
            self._call(self.producer.send_offsets, offsets, group_metadata(member))
        )
        # A delivery that fails fails the worker (``commit``), whatever the call still does.
        for delivery in transaction.deliveries:
            await delivery
        await sending
        self._member_for(transaction)
        await self._call(self.producer.commit)

    def _member_for(self, transaction: Transaction) -> GroupMember:
        """The group membership now; raises Fenced unless ``transaction`` was opened in it."""
        now = self.member()
        refused = transaction.fencing_error(now)
        if refused is not None:
            raise Fenced(refused)
        assert now is not None  # fencing_error refuses None
        return now

    async def close(self) -> None:
        """At shutdown: abort the open transaction (its events are consumed again by the
        partitions' next owner, their outputs written once, by it)."""
        async with self._lock:
            if self._open is not None and not self._committing:
                self._open = None
                await self._call(self.producer.abort, CALL_TIMEOUT_S)

    def _fail(self, error: BaseException) -> NoReturn:
        log.critical(
            "the transaction cannot be committed (%r): aborting it and exiting; its events "
            "are consumed again from the committed offsets",
            error,
        )
        try:
            self.producer.abort(5.0)
        except Exception as abort_error:  # fenced producers cannot abort: the broker will
            log.error("abort failed too: %r", abort_error)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_TRANSACTION_FAILED)


class Fenced(RuntimeError):
    """The worker is no longer the group member its transaction was opened under."""
