"""Seven ways faust-streaming 0.15.3 (with aiokafka 0.14) loses events or its group
membership around a rebalance, fixed here (the stories and how each was found:
docs/faust-findings.md):

1. a fetch with an empty partition set returns paused partitions' records
   (``PipelineConsumerThread._fetch_records``);
2. the streams resume before the seek to the committed offsets (``PipelineRecovery``);
3. a partition nobody committed is never seeked back (``PipelineRecovery``);
4. a skipped message counts as acknowledged (``PipelineConsumer.ack``);
5. what a fetch brought for a partition paused meanwhile is dropped without a seek back
   (``PipelineConsumerThread._deliverable``);
6. no heartbeat during a long assignment callback
   (``PipelineConsumerThread.on_partitions_assigned``);
7. a message two agents read, skipped or dropped from its queue by one after the other
   took it, holds up the revocation for ever, or counts as acknowledged once the other
   acknowledges it (``PipelineConsumer.abandon``, ``ReleasingFlowControl``).

Besides: the app's fetch wait instead of Faust's fixed one, a ``read_committed`` consumer
that commits nothing for exactly_once (our transactions commit the offsets), the bulk
restore run first at each assignment, and the fetches that read a join's co-partitioned
topics in step (pipeline.streaming.read_in_step). ``FixedFaustApp`` (the base of every app
of ours) uses them all: its transport, and the ``TableManager`` it is created with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, MutableSet
from typing import Any, ClassVar, Protocol, cast
from weakref import WeakSet

import aiokafka
import faust
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.transports import ConsumerT, TransportT
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from pipeline.engine.fast_path import DirectDrainConsumer
from pipeline.engine.membership import has_records_to_read
from pipeline.streaming.read_in_step import ReadInStep

log = logging.getLogger(__name__)


class PipelineConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    # Whether the consumer reads committed records only (exactly_once).
    reads_committed: ClassVar[bool] = False

    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        """Faust's consumer, with the app's fetch wait instead of Faust's fixed 1,500 ms
        (pipeline.settings: ``fetch_max_wait_ms``). The Fetcher is made from this
        attribute when the consumer starts."""
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = cast(FixedFaustApp, self.app).fetch_max_wait_ms
        return consumer

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """Faust's, with the group membership kept alive meanwhile (see the module, fix 6):
        aiokafka's heartbeats start before the app's assignment callback instead of after.
        Each partition is read in step afresh, from its committed offset."""
        self._ensure_consumer()._coordinator._start_heartbeat_task()
        cast(FixedFaustApp, self.app).read_in_step.restart()
        await super().on_partitions_assigned(assigned, generation_id)

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> RecordMap:
        """Records of the partitions active when the fetch starts, none when none is, and
        of those still deliverable when it returns (see the module, fixes 1 and 5), a
        join's co-partitioned topics read in step. ``active_partitions`` is Faust's live set."""
        requested = set(active_partitions)
        if not requested:
            return {}
        read_in_step = cast(FixedFaustApp, self.app).read_in_step
        if read_in_step.active:
            reads_committed = self.reads_committed

            def behind(tp: TP) -> bool:
                return has_records_to_read(consumer, tp, reads_committed)

            paused = cast(faust_aiokafka.Consumer, self.consumer)._buffered_partitions
            requested, max_records = read_in_step.next_fetch(requested, behind, max_records, paused)
        records = await super()._fetch_records(
            consumer, requested, timeout=timeout, max_records=max_records
        )
        deliverable = self._deliverable(consumer, records, active_partitions)
        if read_in_step.active:
            for tp, tp_records in deliverable.items():
                if tp_records and read_in_step.reads_in_step(tp.topic):
                    latest = max(record.timestamp for record in tp_records)
                    read_in_step.delivered((tp.topic, tp.partition), latest)
        return deliverable

    def _deliverable(
        self, consumer: aiokafka.AIOKafkaConsumer, records: RecordMap, active: set[TP]
    ) -> RecordMap:
        """The records Faust's ``getmany`` will deliver: of partitions active or buffered
        (paused while their agents' queues are full). Any other partition is seeked back
        to its first record here, in the consumer thread, before anything fetches it again."""
        buffered = cast(faust_aiokafka.Consumer, self.consumer)._buffered_partitions
        deliverable: dict[TP, list[Any]] = {}
        for tp, tp_records in records.items():
            if tp in active or tp in buffered:
                deliverable[tp] = tp_records
            elif tp_records and tp in consumer.assignment():
                first = tp_records[0].offset
                log.info(
                    "fetched %d records of %s[%d] from %d after it was paused: seeking back",
                    len(tp_records),
                    tp.topic,
                    tp.partition,
                    first,
                )
                consumer.seek(tp, first)
        return deliverable


class PipelineConsumer(DirectDrainConsumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Messages an agent skipped after another agent had taken them (fix 7).
        self._abandoned: MutableSet[Message] = WeakSet()

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return PipelineConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def abandon(self, message: Message) -> None:
        """An agent skips ``message`` (a fetch from before a rebalance, or the flow
        stopped) that another agent of this worker took: its reference is released, so a
        revocation waits only for the agents processing it, and its offset never counts
        as acknowledged, however they end. It is fetched again from the committed offset
        (fix 7)."""
        self._abandoned.add(message)
        message.ack(self)

    def ack(self, message: Message) -> bool:
        """Faust's, except for a message no stream handed out (fix 4) or one an agent
        abandoned (fix 7), which leaves the messages a revocation waits for, uncounted."""
        if not message.tracked:
            log.debug(
                "not counting the ack of %s[%d]@%d: skipped, never processed",
                message.topic,
                message.partition,
                message.offset,
            )
            return False
        if message in self._abandoned:
            self._unacked_messages.discard(message)
            log.debug(
                "not counting the ack of %s[%d]@%d: skipped by one of its agents",
                message.topic,
                message.partition,
                message.offset,
            )
            return False
        return super().ack(message)


class PipelineTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport whose consumer never fetches with an empty set."""

    Consumer: ClassVar[type[ConsumerT]] = PipelineConsumer


class TransactionalConsumerThread(PipelineConsumerThread):
    reads_committed = True

    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        """Our consumer, reading only committed records: Faust picks read_committed
        only for its own exactly_once, which is not used (pipeline.streaming.app). The
        Fetcher is made from this attribute when the consumer starts."""
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"
        return consumer


class TransactionalConsumer(PipelineConsumer):
    """The consumer of an app whose offsets our transactions commit
    (pipeline.streaming.transactions)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return TransactionalConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Never: an offset committed outside the transaction that wrote the event's
        outputs would skip them after a crash, or repeat them."""
        return False


class TransactionalTransport(PipelineTransport):
    Consumer: ClassVar[type[ConsumerT]] = TransactionalConsumer


class RestoresAssigned(Protocol):
    """An app that bulk-restores the changelog partitions it was just assigned."""

    async def restore_assigned(self, partitions: set[TP]) -> None: ...


class PipelineRecovery(Recovery):
    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        """Bulk-restore the assigned changelog partitions first (the app's
        ``restore_assigned``); Faust's recovery then reads only what is left."""
        if hasattr(self.app, "restore_assigned"):
            await cast(RestoresAssigned, self.app).restore_assigned(assigned)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """Faust's own, in a safe order: seek, empty the queues, then resume the streams."""
        app = cast(faust.App, self.app)
        consumer = app.consumer
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(
                    self.actives_for_table[table], self.standbys_for_table[table]
                )
            )
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        streams = {tp for tp in assignment if not self._is_changelog_tp(tp)}
        if app.consumer_generation_id != generation_id:
            self.log.warning(
                f"Recovery rebalancing again app id "
                f"{app.consumer_generation_id} param {generation_id}"
            )
            return
        if assignment:
            # The stream partitions are still paused (since the assignment), so nothing
            # reaches the agents from a position the seek is about to change.
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
            # aiokafka's seek leaves a partition without a committed offset where it was
            # (fix 3); it starts from the beginning, as with no position at all.
            uncommitted = uncommitted_partitions(consumer, streams)
            if uncommitted:
                await self._wait(
                    seek_to_beginning(consumer, uncommitted),
                    timeout=app.conf.broker_request_timeout,
                )
        self.completed.set()
        # Empties every agent's queue: nothing but stale events can be in them now.
        app.flow_control.resume()
        consumer.resume_partitions(streams)
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


def uncommitted_partitions(consumer: ConsumerT, partitions: set[TP]) -> set[TP]:
    """Those of ``partitions`` the group has committed no offset for, or offset 0 (Faust
    records both as None after its seek)."""
    committed = cast(faust_aiokafka.Consumer, consumer)._committed_offset
    return {tp for tp in partitions if committed.get(tp) is None}


async def seek_to_beginning(consumer: ConsumerT, partitions: set[TP]) -> None:
    """Seek the partitions to their first offset (Faust's consumer has no such call; its
    aiokafka thread does, for aiokafka's partition type)."""
    thread = cast(faust_aiokafka.Consumer, consumer)._thread
    await thread.seek_to_beginning(
        *(aiokafka.TopicPartition(tp.topic, tp.partition) for tp in sorted(partitions))
    )


class PipelineTableManager(TableManager):
    """Faust's TableManager with :class:`PipelineRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = PipelineRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class ReleasingFlowControl(FlowControlEvent):
    """Faust's flow control, whose ``clear`` (at a revocation, and as the flow resumes)
    abandons, before dropping the agents' queued events, every message another agent of
    the worker took already (fix 7): the revocation would wait for it for ever."""

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    def clear(self) -> None:
        consumer = self.app.consumer
        for queue in self._queues:
            for queued in cast(Iterable[Any], queue._queue):  # type: ignore[attr-defined]
                message = getattr(queued, "message", None)
                if message is not None and message.tracked:
                    cast(PipelineConsumer, consumer).abandon(message)
        super().clear()


class FixedFaustApp(faust.App):
    """A Faust app with the fixes: pass ``TableManager=PipelineTableManager``."""

    # Set before the app starts when our transactions commit its offsets: its consumer
    # then reads committed records only and Faust commits nothing.
    commits_in_transactions: bool = False
    # How long the broker may hold the worker consumer's fetch (Faust's fixed value here).
    fetch_max_wait_ms: int = 1500
    # The topics its consumer reads in step (none here).
    read_in_step: ReadInStep = ReadInStep((), max_wait_s=0)

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return ReleasingFlowControl(self, loop=self.loop)

    def _new_transport(self) -> TransportT:
        # Faust's, for our consumer's transport class: never fetches with an empty
        # partition set.
        urls: Any = self.conf.broker_consumer
        if self.commits_in_transactions:
            return TransactionalTransport(urls, self)
        return PipelineTransport(urls, self)
