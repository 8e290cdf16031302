"""Every use of a Faust internal, in one place: what the runtime needs that Faust does
not offer publicly, five ways by which faust-streaming 0.15.3 (with aiokafka 0.14)
loses events around a rebalance and one by which it loses its group membership, fixed here.

The internals used (tests/unit/streaming/test_faust_internals.py fails on another Faust
version, so each is checked again before an upgrade):
- ``Store._db_for_partition`` and ``Store._dbs``: the bulk restore writes into the
  RocksDB databases Faust opens (``partition_db``), the agents read and store their rows
  there (``partition_reader``, ``write_partition``), a view reads a partition this worker
  does not own (``read_partition``), and copies of partitions no longer held are removed
  (``drop_partition``);
- ``Recovery.on_rebalance``: the bulk restore of the assigned partitions runs first;
- ``Web.web_app``: the aiohttp application our routes are added to (``aiohttp_app``);
- Faust's fetch loop (``Consumer._drain_messages``) and what the conductor does with a
  message (the partition's channels in ``Conductor._tp_index``, its lock, the flow control,
  the producer buffer, the channel queue's ``put_nowait_enhanced`` with the pressure
  callbacks, ``Message.incref``): the fetch loop puts each message straight into its
  agent's queue where nothing would wait (``PipelineConsumer._drain_messages``,
  ``DirectDelivery``);
- the aiokafka consumer behind Faust's (``Consumer._thread``) and its subscription state:
  each assigned partition's fetch position and high watermark, for the lag metrics
  (``fetch_states``);
- ``App._new_transport``, ``app._fetcher``, ``Recovery.on_recovery_completed``, the
  aiokafka driver's consumer thread, ``Consumer.ack``, ``Consumer._committed_offset`` and
  ``Consumer._buffered_partitions`` (with what ``Consumer.getmany`` delivers): the fixes
  below;
- the agent stream's channel queue (a ``ThrowableQueue``) and what Faust's
  stream iterator (``Stream._py_aiter``, compiled as ``faust._cython.streams``) does with
  each event it takes: the agents take their events in bulk (``ArrivedEvents``);
- ``Schema.compile`` and the event class Faust makes events of (``conf.Event``): the
  agents' topics hand each message over as it came (``RawSchema``);
- ``AIOKafkaConsumerThread._create_worker_consumer`` and aiokafka's
  ``AIOKafkaConsumer._fetch_max_wait_ms``: Faust fixes the fetch wait at 1,500 ms, ours is
  the app's (``PipelineConsumerThread``, pipeline.settings ``fetch_max_wait_ms``);
- for exactly-once (pipeline.streaming.transactions), where our transactions commit the
  consumed offsets: ``AIOKafkaConsumerThread._create_worker_consumer`` and aiokafka's
  ``AIOKafkaConsumer._isolation_level`` (the worker's consumer reads with
  ``read_committed`` although Faust's own guarantee stays at-least-once),
  ``Consumer.commit`` (Faust commits nothing), and aiokafka's group coordinator
  (``AIOKafkaConsumer._coordinator``: ``group_id``, ``generation``, ``member_id``,
  ``_group_instance_id``), the membership each transaction's offsets are committed
  under (``group_member``);
- aiokafka's ``GroupCoordinator._start_heartbeat_task``: fix 6.

The first two were found by the crash soak (tests/integration/test_crash_soak.py), the
next three by the rolling restart (tests/integration/test_rolling_restart.py): after a few
rebalances the views stayed short of the input for good, although every worker was idle
and the group had nothing left to read (or stopped committing a partition). The fifth
showed only under CI's load. The sixth failed the zombie test
(tests/integration/test_zombie.py) once in a few runs.

1. Fetching with an empty partition set (``PipelineTransport``).
   Faust hands aiokafka its *live* set of active (unpaused) partitions; the fetch runs
   later, in the consumer thread. If Faust pauses them all in between (it does at the end of
   every table recovery, until the streams are resumed), aiokafka gets an empty set, which
   it reads as "every assigned partition", and hands back whatever it has buffered for the
   paused stream partitions. Faust throws those records away (not active), but aiokafka's
   position has moved past them: a partition with a committed offset is seeked back later,
   one without (a partition nobody has committed yet, e.g. a worker's first minutes) never
   is, so its first records are never processed and the offsets committed after them skip
   them. Seen as: "fetched records for partitions not active (active set now 0):
   order_lines_by_sku[0] 260 records 0..259". robinhood/faust PR 69 had fixed exactly this
   (a lock, and no fetch with an empty set); faust-streaming lost the fix.
   Here the consumer thread fetches for a copy of the set, and not at all when it is empty.

2. Resuming the streams before the seek (``PipelineRecovery``).
   When a rebalance's table recovery is over, ``Recovery.on_recovery_completed`` resumes the
   stream partitions, awaits ``perform_seek`` (a committed-offset request per partition),
   then calls ``app.flow_control.resume()``, which *empties every agent's queue*. During the
   seek the fetcher already delivers events; agents handle a few, the rest are thrown away.
   They are never acknowledged and never fetched again, so Faust never commits that
   partition again (it commits only up to the first gap), and after a restart they are read
   again but look like replays to the rows (``pipeline.streaming.positions.is_new``): lost.
   Seen as: order lines at offsets 3-6 never applied and the partition's committed offset
   stuck at 3 until the worker was killed. faust-streaming issue 596 describes the same race.
   Here the stream partitions stay paused until the seek is done and the queues are
   emptied (they can only hold stale events then); only then are they resumed.

3. Seeking a partition nobody committed yet (``PipelineRecovery``).
   After every rebalance Faust seeks each partition back to its committed offset, which
   is what brings back the records it fetched and then threw away (the rest of a fetch
   cut short by the generation change, events emptied from the agents' queues, events the
   streams skipped as stale). aiokafka's ``seek_to_committed`` seeks only where the
   committed offset is above 0: a partition without one (every partition in a group's
   first seconds) stays past those records. They are never processed, and Faust's commit,
   which checks for a gap before the first acknowledged offset only when the committed
   offset is truthy, moves past them. Seen as: ``order_created[2]`` offsets 0-2 never
   applied, the user's first row already at offset 3, with two workers started together.
   Here such partitions are seeked to their beginning (``auto_offset_reset`` is earliest).

4. Acknowledging events nobody processed (``PipelineConsumer.ack``).
   A Faust stream acknowledges each message it skips (of an older generation, or read
   while the flow is stopped) as if it had been processed. Its offset then counts toward
   the next commit, and a commit before the seek back (the commit timer runs throughout)
   covers an event no agent handled. Our agents take their events through
   ``ArrivedEvents``, which leaves such messages alone; for any stream iterated the Faust
   way, an acknowledgement counts here only for a message it handed out (marked
   ``tracked``).

5. Dropping what a fetch brought for a partition paused meanwhile
   (``PipelineConsumerThread._fetch_records``).
   A fetch waits in the consumer thread for up to a second, and through a whole rebalance
   (aiokafka waits for the new assignment), for the partitions active when it was asked
   for. Faust then delivers only the records of partitions active when it iterates them;
   the others it drops without a seek back, and aiokafka's position is past them. After a
   rebalance, such a fetch returned the records of a stream partition still paused until
   the seek to the committed offsets was done, fetched from the offset just sought: the
   next fetch started after them, and Faust, seeing the offsets jump, took the jump for a
   gap (as after compaction or transaction markers) and committed past it. Seen as:
   ``order_created[5]`` offsets 97-100 never applied, by the worker that kept the
   partition across the rebalance. Here the records of a partition neither active nor
   buffered when the fetch returns are kept from Faust, and the partition is seeked back
   to the first of them.

6. Losing the group membership during a long assignment callback
   (``PipelineConsumerThread.on_partitions_assigned``).
   aiokafka stops heartbeating when a rebalance starts and starts again only once the
   assignment callback returned; Faust's callback runs the table recovery's first step,
   where the bulk restore and, under exactly_once, the wait for a previous owner's
   commit in doubt take place. A callback longer than the session timeout (15 s) loses
   the membership: the broker drops the member, and its next transaction is refused
   (UNKNOWN_MEMBER_ID), which exits the worker. Seen as: the survivor of the zombie test
   took over at a new generation, waited 12.3 s for the zombie's transaction in doubt,
   restored for 1.1 s, and exited 15.1 s after it joined, its first heartbeat never sent.
   The Java client and librdkafka heartbeat during the callback (KAFKA-10122,
   librdkafka issue 598); here aiokafka's heartbeat task is started before it (it is
   the same task aiokafka would start after it, which then finds it running).

``FixedFaustApp`` (the base of every app of ours) uses them all: its transport, and the
``TableManager`` it is created with.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, cast

import aiokafka
import faust
from aiohttp import web
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import CONSUMER_FETCHING, RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, EventT, Message, StreamT
from faust.types.transports import ConsumerT, TransportT
from mode import Service, ServiceT
from mode.utils.queues import ThrowableQueue
from rocksdict import Rdict, WriteBatch

log = logging.getLogger(__name__)

# The Faust version whose code these classes replace.
FAUST_VERSION = "0.15.3"


class RawSchema(faust.Schema[bytes, bytes]):
    """Keys and values as the bytes the message holds: the agents decode them
    themselves (pipeline.streaming.agents), so their events carry the message's own.

    Faust's ``raw`` serializers give the same bytes, through its serializer registry for
    each key and value and a read of the app's settings for each event: about 5% of a
    pre-loaded worker's time.
    """

    def __init__(self) -> None:
        super().__init__(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    def compile(
        self,
        app: AppT,
        *,
        on_key_decode_error: Any = None,
        on_value_decode_error: Any = None,
        default_propagate: bool = False,
    ) -> Callable[..., Coroutine[Any, Any, EventT[Any]]]:
        """The decoder Faust's conductor calls for each message (it cannot fail)."""
        make_event = RawSchema.event_maker(app)

        async def decode(message: Message, *, propagate: bool = default_propagate) -> EventT[Any]:
            return make_event(message)

        return decode

    @staticmethod
    def event_maker(app: AppT) -> Callable[[Message], EventT[Any]]:
        """Makes the event of a message as Faust's ``raw`` serializers would: the message's
        own key, value and headers, in the app's event class (read once here)."""
        event_class = cast(Callable[..., EventT[Any]], app.conf.Event)

        def make_event(message: Message) -> EventT[Any]:
            return event_class(app, message.key, message.value, message.headers, message)

        return make_event


class PipelineConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
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
        aiokafka's heartbeats start before the app's assignment callback instead of after."""
        self._ensure_consumer()._coordinator._start_heartbeat_task()
        await super().on_partitions_assigned(assigned, generation_id)

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> RecordMap:
        """Records of the partitions active when the fetch starts, none when none is, and
        of those still deliverable when it returns (see the module, fixes 1 and 5).
        ``active_partitions`` is Faust's live set."""
        requested = set(active_partitions)
        if not requested:
            return {}
        records = await super()._fetch_records(
            consumer, requested, timeout=timeout, max_records=max_records
        )
        return self._deliverable(consumer, records, active_partitions)

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


# Faust's fetch loop lets other work run after this many messages.
FETCH_LOOP_YIELD_EVERY = 100


class PipelineConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return PipelineConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def ack(self, message: Message) -> bool:
        """Faust's, except for a message no stream handed out (see the module, fix 4)."""
        if not message.tracked:
            log.debug(
                "not counting the ack of %s[%d]@%d: skipped, never processed",
                message.topic,
                message.partition,
                message.offset,
            )
            return False
        return super().ack(message)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Faust's fetch loop (``Consumer._drain_messages``, the same steps in the same
        order), with each message put straight into its agent's queue by
        ``DirectDelivery`` where it can; the others go through Faust's conductor, as in
        Faust's loop (``wait_first`` racing the delivery against a stop of the flow)."""
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        deliver_directly = DirectDelivery(self.app)
        since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                fetched = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in fetched:
                        since_yield += 1
                        if since_yield > FETCH_LOOP_YIELD_EVERY:
                            await asyncio.sleep(0)
                            since_yield = 0
                        offset = message.offset
                        read_offset = get_read_offset(tp)
                        if read_offset is None or offset >= read_offset:
                            gap = offset - (read_offset or 0)
                            if gap > 1 and read_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, read_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if not deliver_directly(message):
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev("DROPPED MESSAGE ROFF %r", offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


PressureCallbacks = tuple[Callable[[], None], Callable[[], None]]


class DirectDelivery:
    """What Faust's conductor does with a message of a partition one agent alone reads,
    done at once: the message referenced once, its event (made as ``RawSchema`` makes
    it) put into the agent's queue, with the conductor's pressure callbacks, which pause
    fetching the partition while the queue is nearly full.

    The conductor does it per message through a lock, the flow control, Faust's producer
    buffer check, the decoder's coroutine and its channel loop, each awaited (and Faust's
    fetch loop races that against a stop of the flow with four tasks): about 7% of a
    pre-loaded worker's time, though none of it waits while the flow is on, the queue
    has room and Faust's producer buffer is empty (nothing of ours sends through Faust's
    producer). Where any of these does not hold, the conductor delivers the message.
    """

    def __init__(self, app: AppT) -> None:
        self.app = app
        conductor = cast(Any, app.topics)
        self.channels_by_tp: Mapping[TP, set[Any]] = conductor._tp_index
        self.subscribing = conductor._tp_to_callback_lock
        self.flow_is_active = app.flow_control.is_active
        self.make_event = RawSchema.event_maker(app)
        # Faust's producer buffer is a thread's queue instead with producer_threaded.
        self.producer_buffer: asyncio.Queue[Any] | None = (
            None if app.conf.producer_threaded else app.producer.buffer.pending
        )
        self.pressure: dict[TP, PressureCallbacks] = {}

    def __call__(self, message: Message) -> bool:
        """Deliver ``message``; False, with nothing done, where the conductor must."""
        channels = self.channels_by_tp.get(message.tp)
        if (
            not channels
            or len(channels) != 1
            or self.subscribing.locked()
            or not self.flow_is_active()
            or self.producer_buffer is None
            or self.producer_buffer.qsize()
        ):
            return False
        (channel,) = channels
        queue = channel.queue
        if not isinstance(channel.schema, RawSchema) or queue.full():
            return False
        on_pressure_high, on_pressure_drop = self._pressure_callbacks(message)
        message.incref(1)
        queue.put_nowait_enhanced(
            self.make_event(message),
            on_pressure_high=on_pressure_high,
            on_pressure_drop=on_pressure_drop,
        )
        return True

    def _pressure_callbacks(self, message: Message) -> PressureCallbacks:
        # One pair per partition, kept: the queue tells the drop callbacks it holds by
        # identity.
        callbacks = self.pressure.get(message.tp)
        if callbacks is None:
            # Faust's own TP: the message's is aiokafka's, and the consumer's partition
            # sets must hold only Faust's.
            tp = TP(message.topic, message.partition)
            app = self.app
            on_topic_buffer_full = app.sensors.on_topic_buffer_full
            consumer = app.consumer

            def on_pressure_high() -> None:
                on_topic_buffer_full(tp)
                consumer.on_buffer_full(tp)

            def on_pressure_drop() -> None:
                consumer.on_buffer_drop(tp)

            callbacks = self.pressure[message.tp] = (on_pressure_high, on_pressure_drop)
        return callbacks


class PipelineTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport whose consumer never fetches with an empty set."""

    Consumer: ClassVar[type[ConsumerT]] = PipelineConsumer


class TransactionalConsumerThread(PipelineConsumerThread):
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


@dataclass(frozen=True)
class GroupMember:
    """This worker's membership of its consumer group, as the group coordinator knows
    it: a transaction's offsets are committed under it, and the broker rejects them
    once the group has moved on without this member (KIP-447)."""

    group_id: str
    generation_id: int  # -1 while not a member
    member_id: str  # empty while not a member
    group_instance_id: str | None  # static membership (KIP-345)


def group_member(app: AppT) -> GroupMember | None:
    """The worker consumer's current membership; None before its consumer exists. Read
    from the consumer thread's coordinator without a call into that thread (plain
    attributes; the transaction checks it did not change while it was open)."""
    consumer = cast(faust_aiokafka.Consumer, app.consumer)._thread._consumer
    if consumer is None:
        return None
    coordinator = consumer._coordinator
    if coordinator is None:
        return None
    return GroupMember(
        group_id=coordinator.group_id,
        generation_id=coordinator.generation,
        member_id=coordinator.member_id,
        group_instance_id=coordinator._group_instance_id,
    )


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


class FixedFaustApp(faust.App):
    """A Faust app with both fixes: pass ``TableManager=PipelineTableManager``."""

    # Set before the app starts when our transactions commit its offsets: its consumer
    # then reads committed records only and Faust commits nothing.
    commits_in_transactions: bool = False
    # How long the broker may hold the worker consumer's fetch (Faust's fixed value here).
    fetch_max_wait_ms: int = 1500

    def _new_transport(self) -> TransportT:
        # Faust's, for our consumer's transport class: never fetches with an empty
        # partition set.
        urls: Any = self.conf.broker_consumer
        if self.commits_in_transactions:
            return TransactionalTransport(urls, self)
        return PipelineTransport(urls, self)


class ArrivedEvents:
    """An agent's events, taken in bulk from the queue its Faust stream reads, with what
    the stream's iterator does for each event, done here for a batch.

    Faust's stream hands out one event per step, with an ``await sleep(0)``, sensors, a
    context variable and its bookkeeping each time: most of a worker's time once the
    rest was batched. Taken here, as there, are only the events of the current consumer
    generation while the flow is on (a fetch from before a rebalance may still be queued).
    The others are left alone: never tracked nor acknowledged, they are fetched again
    from the committed offset. Acknowledging one would let the commit skip past it.
    Each event taken is tracked (a revocation waits until every tracked message was
    acknowledged), and its message-in sensor called; ``ack`` acknowledges as the stream's
    does. The stream's per-event sensors (``on_stream_event_in/out``, Faust's monitor)
    are not called: nothing reads them.
    """

    def __init__(self, stream: StreamT[Any]) -> None:
        app = stream.app
        self.app = app
        # The clone the agent's stream iterates; the conductor fills its queue.
        self.queue: ThrowableQueue[EventT[Any]] = stream.channel.queue  # type: ignore[attr-defined]
        self.consumer = app.consumer
        self.acks_enabled_for = app.topics.acks_enabled_for
        self.on_message_out = app.sensors.on_message_out

    async def take(self, limit: int) -> list[EventT[Any]]:
        """The events waiting, at least one (waited for), at most ``limit``; none once
        the agent is stopping."""
        queue = self.queue
        while True:
            try:
                # Raises what was thrown into the channel, as the stream does.
                taken = [await queue.get()]
            except StopAsyncIteration:  # the actor's cancel(): the stream's end
                return []
            while len(taken) < limit and queue.qsize():
                taken.append(queue.get_nowait())
            events = self._current(taken)
            if events:
                return events

    def _current(self, taken: list[EventT[Any]]) -> list[EventT[Any]]:
        """The events of ``taken`` to process, now tracked. Taken without a pause, so
        the flow and the generation are the same for them all."""
        app = self.app
        if not app.flow_control.is_active():
            return []
        generation = app.consumer_generation_id
        events = []
        track = self.consumer.track_message
        acks_enabled_for = self.acks_enabled_for
        for event in taken:
            message = event.message
            if message.generation_id != generation:
                continue
            if not message.tracked and acks_enabled_for(message.topic):
                message.tracked = True
                track(message)  # into the unacked set; the message-in sensor
            events.append(event)
        return events

    def ack(self, event: EventT[Any]) -> None:
        """Acknowledge ``event`` (its offset may now be committed), as the stream does."""
        if event.ack():
            message = event.message
            self.on_message_out(message.tp, message.offset, message)


def partition_db(store: Any, partition: int) -> Rdict:
    """The RocksDB database of one partition of a table's store (opened if need be)."""
    return cast(Rdict, store._db_for_partition(partition))


def write_partition(store: Any, partition: int, rows: Iterable[tuple[bytes, bytes]]) -> None:
    """Store ``rows`` (key, value) in one partition of a table's store: one RocksDB write
    batch, where the table's own writes cost a put each through its codecs."""
    if not hasattr(store, "_db_for_partition"):  # memory://: one dict for every partition
        for key, value in rows:
            store[key] = value
        return
    batch = WriteBatch(raw_mode=True)
    for key, value in rows:
        batch.put(key, value)
    partition_db(store, partition).write(batch)


def partition_reader(store: Any) -> Callable[[int, bytes], bytes | None]:
    """Reads a key in one partition this worker owns of a table's store, straight from
    its RocksDB database (the table's own read takes the partition from Faust's current
    event, through its codecs and sensors)."""
    if not hasattr(store, "_db_for_partition"):  # memory://: one dict for every partition
        return lambda partition, key: cast(bytes | None, store.get(key))
    db_for_partition = store._db_for_partition
    return lambda partition, key: cast(bytes | None, db_for_partition(partition).get(key))


def read_partition(store: Any, partition: int, key: bytes) -> bytes | None:
    """``key``'s value in one partition of a table's store, whether this worker holds the
    partition as active, as standby or only as a copy it has not removed yet."""
    if not hasattr(store, "_db_for_partition"):  # memory://: one dict for every partition
        return cast(bytes | None, store.get(key))
    if not has_partition(store, partition):
        return None
    return cast(bytes | None, partition_db(store, partition).get(key))


def copy_offset(store: Any, tp: TP) -> int | None:
    """The offset of the last changelog record this worker's copy of the partition holds;
    None when it holds no copy (none is opened to ask) or the copy holds no record."""
    if not has_partition(store, tp.partition):
        return None
    return cast(int | None, store.persisted_offset(tp))


def has_partition(store: Any, partition: int) -> bool:
    """Whether this worker holds a copy of the partition (open, or on disk)."""
    if not hasattr(store, "_dbs"):  # memory://
        return True
    return partition in store._dbs or Path(store.partition_path(partition)).exists()


def drop_partition(store: Any, partition: int) -> int:
    """Close the partition's database and delete its files; the bytes freed. A partition
    assigned again later is rebuilt from its changelog."""
    path = Path(store.partition_path(partition))
    db = store._dbs.pop(partition, None)
    if db is not None:
        db.close()
    freed = sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    shutil.rmtree(path, ignore_errors=True)
    return freed


def aiohttp_app(app: AppT) -> web.Application:
    """The aiohttp application of the app's web server (the only driver Faust ships)."""
    return cast(web.Application, app.web.web_app)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FetchState:
    """Where the consumer is in one partition: both are *next* offsets."""

    position: int  # of the next record the consumer fetches
    highwater: int  # of the next record written to the partition (as of the last fetch)


def fetch_states(app: AppT) -> dict[TP, FetchState]:
    """The fetch state of every assigned partition the consumer has a position and a high
    watermark for. Read without a call into the consumer's thread (aiokafka's ``position``
    is a coroutine there, and its ``highwater`` asserts the partition is still assigned,
    which a rebalance may change in between); a read may be a fetch behind."""
    consumer = cast(faust_aiokafka.Consumer, app.consumer)._thread._consumer
    subscription = consumer._subscription.subscription if consumer is not None else None
    assignment = subscription.assignment if subscription is not None else None
    if assignment is None:
        return {}
    states = {}
    for tp in assignment.tps:
        state = assignment.state_value(tp)
        if state is not None and state.has_valid_position and state.highwater is not None:
            states[TP(tp.topic, tp.partition)] = FetchState(state.position, state.highwater)
    return states
