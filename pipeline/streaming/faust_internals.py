"""Every use of a Faust internal, in one place: what the runtime needs that Faust does
not offer publicly, and two races by which faust-streaming 0.15.3 loses events around a
rebalance, fixed here.

The internals used (tests/unit/streaming/test_faust_internals.py fails on another Faust
version, so each is checked again before an upgrade):
- ``faust.streams._current_event``: tables take the partition of a read or write from
  the current event (``bind_event``);
- ``Store._db_for_partition`` and ``Store._dbs``: the bulk restore writes into the
  RocksDB databases Faust opens (``partition_db``), a view reads a partition this worker
  does not own (``read_partition``), and copies of partitions no longer held are removed
  (``drop_partition``);
- ``Recovery.on_rebalance``: the bulk restore of the assigned partitions runs first;
- ``Web.web_app``: the aiohttp application our routes are added to (``aiohttp_app``);
- the aiokafka consumer behind Faust's (``Consumer._thread``) and its subscription state:
  each assigned partition's fetch position and high watermark, for the lag metrics
  (``fetch_states``);
- ``App._new_transport``, ``app._fetcher``, ``Recovery.on_recovery_completed`` and the
  aiokafka driver's consumer thread: the two fixes below;
- for exactly-once (pipeline.streaming.transactions), where our transactions commit the
  consumed offsets: ``AIOKafkaConsumerThread._create_worker_consumer`` and aiokafka's
  ``AIOKafkaConsumer._isolation_level`` (the worker's consumer reads with
  ``read_committed`` although Faust's own guarantee stays at-least-once),
  ``Consumer.commit`` (Faust commits nothing), and aiokafka's group coordinator
  (``AIOKafkaConsumer._coordinator``: ``group_id``, ``generation``, ``member_id``,
  ``_group_instance_id``), the membership each transaction's offsets are committed
  under (``group_member``).

Both were found by the crash soak (tests/integration/test_crash_soak.py): after a few
rebalances the views stayed short of the input for good, although every worker was idle
and the group had nothing left to read (or stopped committing a partition).

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

``FixedFaustApp`` (the base of every app of ours) uses both: its transport, and the
``TableManager`` it is created with.
"""

from __future__ import annotations

import asyncio
import shutil
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, cast

import aiokafka
import faust
from aiohttp import web
from faust.streams import _current_event
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, EventT
from faust.types.transports import ConsumerT, TransportT
from rocksdict import Rdict

# The Faust version whose code these classes replace.
FAUST_VERSION = "0.15.3"


class PipelineConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> RecordMap:
        """Records of the partitions active *now*, none when none is (see the module)."""
        requested = set(active_partitions)
        if not requested:
            return {}
        return await super()._fetch_records(
            consumer, requested, timeout=timeout, max_records=max_records
        )


class PipelineConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return PipelineConsumerThread(self, loop=self.loop, beacon=self.beacon)


class PipelineTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport whose consumer never fetches with an empty set."""

    Consumer: ClassVar[type[ConsumerT]] = PipelineConsumer


class TransactionalConsumerThread(PipelineConsumerThread):
    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        """Faust's consumer, reading only committed records: Faust picks read_committed
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
        self.completed.set()
        # Empties every agent's queue: nothing but stale events can be in them now.
        app.flow_control.resume()
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


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

    def _new_transport(self) -> TransportT:
        # Faust's, for our consumer's transport class: never fetches with an empty
        # partition set.
        urls: Any = self.conf.broker_consumer
        if self.commits_in_transactions:
            return TransactionalTransport(urls, self)
        return PipelineTransport(urls, self)


def bind_event(event: EventT[Any]) -> None:
    """Make ``event`` Faust's current event. Tables take the partition of a read or
    write (which RocksDB database, which changelog partition) from the current
    event; in a batch, each row is read and written under the event that changed it.
    """
    _current_event.set(weakref.ref(event))


def partition_db(store: Any, partition: int) -> Rdict:
    """The RocksDB database of one partition of a table's store (opened if need be)."""
    return cast(Rdict, store._db_for_partition(partition))


def read_partition(store: Any, partition: int, key: bytes) -> bytes | None:
    """``key``'s value in one partition of a table's store, whether this worker holds the
    partition as active, as standby or only as a copy it has not removed yet."""
    if not hasattr(store, "_db_for_partition"):  # memory://: one dict for every partition
        return cast(bytes | None, store.get(key))
    if not has_partition(store, partition):
        return None
    return cast(bytes | None, partition_db(store, partition).get(key))


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
