from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from unittest.mock import AsyncMock, MagicMock, Mock
from weakref import WeakSet

import aiokafka
import faust
import faust._cython as faust_cython
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.consumer.subscription_state import (
    Assignment,
    SubscriptionState,
    TopicPartitionState,
)
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import KafkaError
from faust.stores.memory import Store as MemoryStore
from faust.stores.rocksdb import RocksDBOptions
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import Stream
from faust.tables.base import Collection
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.conductor import Conductor, ConductorCompiler
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.consumer import ConsumerMessage, ConsumerThread, ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.transport.producer import ProducerBuffer
from faust.types import TP, EventT, StreamT
from faust.types.tuples import Message as FaustMessage
from faust.web.drivers.aiohttp import Web
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from pipeline.engine import FAUST_VERSION
from pipeline.engine.fast_path import ArrivedEvents, DirectDelivery, RawSchema
from pipeline.engine.fixes import (
    PipelineConsumer,
    PipelineConsumerThread,
    PipelineRecovery,
    PipelineTransport,
    TransactionalConsumer,
    TransactionalConsumerThread,
    TransactionalTransport,
)
from pipeline.engine.membership import FetchState, fetch_states, group_member, has_records_to_read
from pipeline.engine.restore import restore
from pipeline.engine.store import FaustPartitionStore, partition_reader, write_partition
from pipeline.services import shop
from pipeline.settings import Settings
from pipeline.streaming.ports import GroupMember
from pipeline.streaming.read_in_step import ReadInStep
from pipeline.worker import create_app

# Faust's code that pipeline.engine replaces or relies on; a Faust upgrade
# that changes any of it fails here, so the fixes are compared with the new code.
UPSTREAM: dict[Callable[..., Any], str] = {
    Recovery.on_recovery_completed: (
        "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac"
    ),
    AIOKafkaConsumerThread._fetch_records: (
        "39a2c6c79fc1455a199629912b533458a720c64983bc957420a42feef6593baa"
    ),
    Consumer._new_consumer_thread: (
        "0870ec53dea75083995e3565c0f0a25a1c63ecceaeb238e92e2585e3623af5a9"
    ),
    FaustConsumer.ack: "5fcf41cf45153475de3790dc56fec1b83335956dc8b3bf7ff6bbb2b57627f03f",
    # A revocation waits for the tracked messages that are not acked (fix 7: an abandoned
    # message is left out of them once every agent released it).
    FaustConsumer.track_message: (
        "217d7f1399a4cd8e15a43a64ecf50413b9b738058e5433e057f0dc3927a3fc03"
    ),
    FaustConsumer.wait_empty: "e4662fe24f094819add590b2d75f233840e77823b432aea6504539768572102f",
    # The last reference released is the final ack (fix 7 counts on it).
    FaustMessage.ack: "4751b72c4ed84153a7b6c14fdfe41cc92e477b38a6c6089cb785532ef5771688",
    FaustMessage.decref: "f23396189d0e55922d5c9c627879af52e076aa2a14262b4ea72aee86534c729b",
    # A revocation clears the agents' queues, then waits for what was taken (fix 7:
    # ReleasingFlowControl reads the queued events before the clear drops them).
    faust.App._on_partitions_revoked: (
        "d5c895bbe57dc73ae4d7f762f6fdc9fdd3abd02f9e05863ccfd8034082e5682f"
    ),
    FlowControlEvent.clear: "dda5e40d80288a8f4244cffdf3e7a648773579a72e64b40182bbbc2424752524",
    ThrowableQueue.clear: "d18f09e451acf62e1cfa4e957497403d287463595b2dff70ea1c7a1271a95036",
    # Delivers only the records of partitions active or buffered when it iterates them,
    # and drops the others without a seek back (fix 5).
    FaustConsumer.getmany: "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e",
    # Seeks only where the committed offset is above 0 (fix 3).
    AIOKafkaConsumer.seek_to_committed: (
        "f6cd85c8b70a4ccf7e862de24f6c5d985038eed3e140990f000aa4b52eda8d72"
    ),
    # What ArrivedEvents does for a batch, the stream's iterator does per event; it also
    # acknowledges the messages it skips (fix 4).
    Stream._py_aiter: "3a48ee257a65435b482d51edb74f2993a67867949b1ef89b49fea893769e0614",
    Stream.ack: "32d7171a89b0931d806a87dc81dcba5673dd9702f8a6add8426e0e236b9e8fef",
    # exactly_once: the consumer made read_committed, Faust's commit replaced, the group
    # membership read from aiokafka's coordinator.
    AIOKafkaConsumerThread._create_worker_consumer: (
        "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7"
    ),
    FaustConsumer.commit: "a354437baaa08bf8096d978ca195963e22f7a497d18392960dd53dacb7c9f2d8",
    aiokafka.AIOKafkaConsumer.__init__: (
        "01506f316191f7c99c785bec915756d1560029a6fad75cba6f4da71e343a8163"
    ),
    # Makes the Fetcher from the attributes set in _create_worker_consumer: the isolation
    # level (exactly_once) and the fetch wait.
    aiokafka.AIOKafkaConsumer.start: (
        "2f1ba70443327538800d348e61042cdedd5a5e6306f40ebe1a06dddba7494c45"
    ),
    GroupCoordinator.__init__: "9e729f077efc4f3a4f3e672047bcdde1f557517f9417415245af851ac25e44fd",
    # RawSchema's decoder replaces the one compiled here, and makes events as this does.
    faust.Schema.compile: "d46eec5ce3195b2c6752cb860a10946cee66ddf6a955f2ea44ac1568c0ecb9ad",
    faust.App.create_event: "15fea3d1e95e6625b2f6a969e9ce4bbed786bed15fde58f0c6518f6e461f7a10",
    # PipelineConsumer._drain_messages is this loop; DirectDelivery does what the two
    # conductor callbacks do, skipping the producer buffer's wait only where it would not.
    FaustConsumer._drain_messages: (
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"
    ),
    ConductorCompiler.build: "837cf521368c1ee4b22c235a2b137f665eca03d0e3e01b5ddedb65232ee73bf2",
    Conductor._compile_message_handler: (
        "9fbc0538097aa4eca6113b99df8d17605ae72a6b5030482f041a183f4cc34df1"
    ),
    ProducerBuffer.wait_until_ebb: (
        "758dd5744044071bbc79609fa8e5bfc339818f186bc19b723de2c4c877412e00"
    ),
    cast(property, ProducerBuffer.size).fget: (
        "b543a978fdece62e7d7c434eea6e842995d67cc1d3288434f5f26ad72c10a779"
    ),
    # aiokafka heartbeats again only once the assignment callback returned, starting the
    # task that PipelineConsumerThread.on_partitions_assigned starts before it (fix 6).
    GroupCoordinator.ensure_active_group: (
        "33c84c1a93012e812cb3d1a6774ded1889f917a4ed4a56f9cf310f984e6fa596"
    ),
    GroupCoordinator._start_heartbeat_task: (
        "358d0cfad997f2e6e319665d615bd4d837c1829fcd2833103a993ce5b5e0e5f7"
    ),
    GroupCoordinator._heartbeat_routine: (
        "61d01028952239d03c882d0bc6c0259fc3125d5da5642cda75071164a181be5c"
    ),
    ConsumerThread.on_partitions_assigned: (
        "e59e8dda43724bd4c943653b34f70c7baa589427381625bac53ceb4b885ef183"
    ),
    # FixedFaustApp's transport, and the TableManager's recovery it replaces.
    faust.App._new_transport: "42db531312dd776fc3937154a32f19eeb9ad7d4ebc2722a92d081a2d271baea1",
    cast(property, TableManager.recovery).fget: (
        "f0bf5de78b4c3d235c3554010480f407010ccb7c481c68852a985542b952df32"
    ),
    # PipelineRecovery runs the bulk restore before this.
    Recovery.on_rebalance: "aa4d997a1795ceae3880f98311b46935d9ae1a183a699b9a283bb4306bc8641f",
    # pipeline.engine.store: the partitions' databases (``_dbs``, ``_db_for_partition``),
    # their paths and changelog offsets, and the store a table makes on first use.
    RocksDBStore.__init__: "c7c0fa2989e8ab4a4349ff29df8258471624a160cb549e6735c367d9b2fefd19",
    RocksDBStore._db_for_partition: (
        "cb7e67d5f9efc4bced7b7ab09a55fe717c352daad5b693594e3f7ca52a98787f"
    ),
    RocksDBStore.partition_path: (
        "0cc4eae7dc33fcf199f5a271d5186984f3a18af73a5168a9961e71518eb7ab14"
    ),
    RocksDBStore.persisted_offset: (
        "6f2e502fb86043a1cf0adca5c2fffb197579db01b31dbba3b0415aaacc35a2ed"
    ),
    RocksDBStore.set_persisted_offset: (
        "b4c811926678346ebb8c40486dbc46d0fbac2bbeaa592384bd955112556acf45"
    ),
    cast(property, Collection.data).fget: (
        "ade4a02ddd5582cb4264a7f927bf7a59e1c0ca6d0ebf9da40b665860cd1187f4"
    ),
    # pipeline.engine.web: the aiohttp application our routes are added to, and the
    # partitioner a view places a key with.
    Web.__init__: "52b00c1bd653c82d64519cfc55285b6ca5973a929129d1809c4aff79e262fc2f",
    DefaultPartitioner.__call__: (
        "4911320054e76343aabfde5fc9fe3bd27701e332ea3aa0ae06dad1f28fabba74"
    ),
    # DirectDelivery reads the conductor's channels by partition (``_tp_index``).
    Conductor.__init__: "441bc3b1df592aa7de42538bbe499a8b43894f3a2319a325ff64200073aa64d3",
    # pipeline.engine.membership: the aiokafka consumer behind Faust's (``_thread``,
    # ``_consumer``) and its subscription state, for the lag metrics.
    ThreadDelegateConsumer.__init__: (
        "7072ae80eac1ff62b52ce9503a8fe7b6ff44fbb390b8f6beba7161b31b8bb483"
    ),
    AIOKafkaConsumerThread.__post_init__: (
        "913dc7c0d9578e2da75bba148929a34034746da74726fbd1b550d5a736a69338"
    ),
    cast(property, SubscriptionState.subscription).fget: (
        "fbbd34b17218040f353c192f52caf54bf8f3678e701a825c2c29baa6aa9a3a60"
    ),
    Assignment.state_value: "183fea82ef48f3e6136739948785fbf07feec2d7119b60e5e9378264ba6780de",
    TopicPartitionState.__init__: (
        "f0b391da1b87af045ac4125de2c2ae928bb351157c2859d9e3586562e0edf7f7"
    ),
    cast(property, TopicPartitionState.has_valid_position).fget: (
        "ebe7c39d949a1f189c840c1d181997cdf5d7809665bc36c5e74b4246e3d4c62f"
    ),
    # The reads in step (PipelineConsumerThread._fetch_records, membership's
    # has_records_to_read): aiokafka hands out only the requested partitions' records,
    # keeps the others' buffered (``_records``) without fetching more of them, and keeps
    # each partition's high watermark and last stable offset from its last fetch.
    Fetcher.fetched_records: "be4348896b9b66afe048de954e2be91c546f4e96c94cb120d5764ec77ce8f19e",
    Fetcher._get_actions_per_node: (
        "1dab2cf937d165d0eeacc8da8ed2b0ebd80b321bb6583757e01cdc1013d31635"
    ),
    Fetcher._proc_fetch_request: (
        "59bf948fff47eed580671971252454daa614df479733f3bedfefe95bc4d8ad30"
    ),
    # pipeline.engine.rocksdb_memory: BoundedStore replaces how a partition's database is
    # opened (the path, read_only only for a file, the options, the TTL, the read options);
    # PipelineTable builds its store as Collection does, and is made and added as App.Table does.
    RocksDBStore._open_for_partition: (
        "1dc4e0113d67379dd61c0a396fa92636577d5fc6be60d4312253fa566080377b"
    ),
    RocksDBOptions.open: "ff87e92d69e2f487e2657c1df266543f4733d4acad3dd18fa5c86f239d8e340d",
    RocksDBOptions.as_options: ("d2a1bea17736d2eb2f8d2da592ef843f31bd9583b17b3fcbb2ebd84c15051660"),
    Collection._new_store_by_url: (
        "343a8125107d3f69ced468ee156659955d31abbc3bbed3df0e6ac87b474f850b"
    ),
    faust.App.Table: "e49f205922bb5121659c410e6a8edb1bc8009068dbb5b097c73f4a1868cc47bb",
    # Faust's recovery and standbys apply a changelog tombstone (a None value) as a delete:
    # windows expired with a tombstone stay deleted in every copy.
    RocksDBStore.apply_changelog_batch: (
        "ea3344d369fc4ab5e3cdace30565691136035a463acb7b2551fdc0b8af71643b"
    ),
    MemoryStore.apply_changelog_batch: (
        "71863e3cd727aac2001c4f19a393c637275eab36056c9a2d395ed1c7528e7647"
    ),
    MemoryStore._create_batch_iterator: (
        "b082c8bcc040382347025bd5b08d31700b2e6b1d2c0232f1de551f1b5495d1ed"
    ),
}
# The compiled twin of Stream._py_aiter, the one Faust runs.
CYTHON_STREAMS = Path(cast(str, faust_cython.__file__)).parent / "streams.pyx"
CYTHON_STREAMS_DIGEST = "0041622f4a251188f53d73e6d51d18d16f0f427512df1e96c043cfdeea4c3250"


def test_the_app_uses_the_fixes() -> None:
    app = create_app(shop(Settings(app_id="unit", topic_prefix="unit.")))
    assert isinstance(cast(Any, app.tables).recovery, PipelineRecovery)
    assert isinstance(app.transport, PipelineTransport)
    assert app.transport.Consumer is PipelineConsumer


def test_the_fixes_match_the_installed_faust() -> None:
    assert faust.__version__ == FAUST_VERSION, (
        f"faust-streaming {faust.__version__} is installed; pipeline.engine "
        f"replaces code of {FAUST_VERSION}: compare it with the new one"
    )
    for function, digest in UPSTREAM.items():
        source = inspect.getsource(function)
        assert hashlib.sha256(source.encode()).hexdigest() == digest, (
            f"Faust's {function.__qualname__} changed: compare it with pipeline.engine"
        )
    assert hashlib.sha256(CYTHON_STREAMS.read_bytes()).hexdigest() == CYTHON_STREAMS_DIGEST, (
        "Faust's compiled stream iterator changed: compare it with ArrivedEvents"
    )


def test_the_agents_events_are_fausts_raw_events_made_without_its_serializers() -> None:
    app = create_app(shop(Settings(app_id="unit", topic_prefix="unit.")))
    sources = [agent.channel for agent in app.agents.values()]
    assert sources and all(isinstance(source.schema, RawSchema) for source in sources)
    message = ConsumerMessage("orders", 3, 7, 0.0, 0, [("h", b"1")], b"k\xff", b"v\x00", None)

    faust_raw = app.topic("orders", key_serializer="raw", value_serializer="raw")

    event = asyncio.run(sources[0].decode(message, propagate=True))
    expected = asyncio.run(faust_raw.decode(message, propagate=True))

    assert type(event) is type(expected)
    assert (event.key, event.value) == (b"k\xff", b"v\x00")
    assert (event.app, event.key, event.value, event.headers, event.message) == (
        expected.app,
        expected.key,
        expected.value,
        expected.headers,
        expected.message,
    )


def fetching_thread(
    records: dict[TP, list[Any]], read_in_step: ReadInStep | None = None
) -> tuple[PipelineConsumerThread, Mock]:
    """A consumer thread (not started) and the aiokafka consumer it fetches from."""
    thread = PipelineConsumerThread.__new__(PipelineConsumerThread)
    thread.consumer = Mock(flow_active=True, _buffered_partitions=set())
    thread.app = SimpleNamespace(read_in_step=read_in_step or ReadInStep((), max_wait_s=0))
    aiokafka_consumer = MagicMock(_closed=False)
    aiokafka_consumer._fetcher._closed = False
    aiokafka_consumer._fetcher.fetched_records = AsyncMock(return_value=records)
    return thread, aiokafka_consumer


def test_no_fetch_when_no_partition_is_active() -> None:
    """aiokafka reads an empty set as every partition and would hand back the paused
    ones' records, which Faust throws away."""
    thread, aiokafka_consumer = fetching_thread({TP("orders", 0): [object()]})
    records = asyncio.run(thread._fetch_records(aiokafka_consumer, set(), timeout=1.0))
    assert records == {}
    aiokafka_consumer._fetcher.fetched_records.assert_not_called()


def test_fetch_for_a_copy_of_the_active_partitions() -> None:
    """Faust's set changes while the fetch waits in the consumer thread."""
    active = {TP("orders", 0), TP("orders", 1)}
    thread, aiokafka_consumer = fetching_thread({TP("orders", 0): [object()]})
    asyncio.run(thread._fetch_records(aiokafka_consumer, active, timeout=1.0))
    (requested,), _ = aiokafka_consumer._fetcher.fetched_records.call_args
    assert requested == active and requested is not active


def test_records_of_a_partition_paused_while_the_fetch_waited_are_kept_back_and_refetched() -> None:
    """Faust would drop them with aiokafka's position past them (fix 5): a fetch asked for
    before a rebalance returned after its seek, the stream partitions still paused."""
    active, paused, buffered, revoked = (TP("orders", partition) for partition in range(4))
    records = {
        tp: [SimpleNamespace(offset=97), SimpleNamespace(offset=98)]
        for tp in (active, paused, buffered, revoked)
    }
    live = {active, paused, buffered, revoked}

    async def pause_while_fetching(*args: Any, **kwargs: Any) -> dict[TP, list[Any]]:
        live.difference_update({paused, buffered, revoked})
        return records

    thread, aiokafka_consumer = fetching_thread(records)
    aiokafka_consumer._fetcher.fetched_records = AsyncMock(side_effect=pause_while_fetching)
    thread.consumer._buffered_partitions = {buffered}
    aiokafka_consumer.assignment.return_value = {active, paused, buffered}

    delivered = asyncio.run(thread._fetch_records(aiokafka_consumer, live, timeout=1.0))

    assert delivered == {active: records[active], buffered: records[buffered]}
    aiokafka_consumer.seek.assert_called_once_with(paused, 97)


def test_a_fetch_leaves_out_a_partition_read_ahead_of_its_co_partitioned_peer() -> None:
    """A join's topics are read in step (pipeline.streaming.read_in_step): the orders of
    partition 0, read to a later time than its registrations, wait while those have
    records to read; the latest timestamp each fetch delivered is their stream time."""
    orders_0, users_0, orders_1 = TP("orders", 0), TP("users", 0), TP("orders", 1)
    read_in_step = ReadInStep([{"orders", "users"}], max_wait_s=10.0)
    read_in_step.delivered(("orders", 0), 5_000)
    read_in_step.delivered(("users", 0), 1_000)
    fetched = {users_0: [SimpleNamespace(offset=3, timestamp=t) for t in (2_000, 7_000, 6_000)]}
    thread, aiokafka_consumer = fetching_thread(fetched, read_in_step)
    aiokafka_consumer._fetcher._records = {users_0: object()}  # fetched, not handed out
    aiokafka_consumer.assignment.return_value = {orders_0, users_0, orders_1}
    active = {orders_0, users_0, orders_1}

    async def fetch() -> None:
        # aiokafka's subscription state needs a running loop.
        states = subscribed({orders_0: (10, 20, 20), users_0: (3, 9, 9), orders_1: (4, 4, 4)})
        aiokafka_consumer._subscription = states._subscription
        await thread._fetch_records(aiokafka_consumer, active, timeout=1.0, max_records=500)

    asyncio.run(fetch())

    (requested,), kwargs = aiokafka_consumer._fetcher.fetched_records.call_args
    assert (requested, kwargs["max_records"]) == ({users_0, orders_1}, 500)
    # The registrations were read to 7,000 (the latest, not the last), past the orders.
    assert read_in_step.next_fetch({orders_0, users_0}, lambda tp: True, 500) == ({orders_0}, 500)


def subscribed(positions: dict[TopicPartition, tuple[int, int | None, int | None]]) -> Any:
    """An aiokafka consumer's subscription state (real) and fetcher (its buffered records,
    none): each partition at its (position, high watermark, last stable offset)."""
    subscription = SubscriptionState()
    subscription.subscribe({tp.topic for tp in positions})
    subscription.assign_from_subscribed(set(positions) | {TopicPartition("users", 9)})
    for tp, (position, highwater, lso) in positions.items():
        state = subscription.subscription.assignment.state_value(tp)
        state.reset_to(position)
        state.highwater, state.lso = highwater, lso
    return SimpleNamespace(_subscription=subscription, _fetcher=SimpleNamespace(_records={}))


def test_records_to_read_are_those_fetched_or_below_the_partitions_end() -> None:
    caught_up, behind, unknown = (TopicPartition("users", n) for n in range(3))
    in_open_transaction = TopicPartition("users", 3)

    async def read() -> None:
        consumer = subscribed(
            {
                caught_up: (40, 40, 40),
                behind: (40, 45, 45),
                unknown: (40, None, None),
                in_open_transaction: (40, 45, 40),
            }
        )
        assert not has_records_to_read(consumer, TP("users", 0), reads_committed=False)
        assert has_records_to_read(consumer, TP("users", 1), reads_committed=False)
        assert has_records_to_read(consumer, TP("users", 2), reads_committed=False)
        assert has_records_to_read(consumer, TP("users", 3), reads_committed=False)
        assert not has_records_to_read(consumer, TP("users", 3), reads_committed=True)
        # Assigned, no position yet (waiting for its committed offset).
        assert has_records_to_read(consumer, TP("users", 9), reads_committed=False)
        # Not assigned: nothing will come.
        assert not has_records_to_read(consumer, TP("users", 7), reads_committed=False)
        consumer._fetcher._records[caught_up] = object()
        assert has_records_to_read(consumer, TP("users", 0), reads_committed=False)

    asyncio.run(read())


@pytest.mark.parametrize("recovery_class", [PipelineRecovery, Recovery])
def test_streams_resume_only_after_the_seek_and_the_queues_emptied(
    recovery_class: type[Recovery],
) -> None:
    """Faust resumes the streams, seeks (agents already get events), then empties the
    agents' queues, dropping events it never fetches again. The streams must stay
    paused until the seek is done and the queues are emptied."""
    calls: list[Any] = []
    stream, changelog = TP("orders", 0), TP("unit-stats-changelog", 0)
    committed, uncommitted = TP("orders", 1), TP("orders", 2)
    consumer = Mock(_committed_offset={committed: 40})
    consumer.assignment.return_value = {stream, committed, uncommitted, changelog}

    async def perform_seek() -> None:
        calls.append("perform_seek")

    async def seek_to_beginning(*tps: TopicPartition) -> None:
        assert all(isinstance(tp, TopicPartition) for tp in tps)  # aiokafka's, not Faust's
        calls.append(("seek to beginning", set(tps)))

    consumer.perform_seek = perform_seek
    consumer._thread.seek_to_beginning = seek_to_beginning
    consumer.resume_partitions.side_effect = lambda tps: calls.append(("resume", set(tps)))
    consumer.resume_flow.side_effect = lambda: calls.append("resume_flow")
    app = Mock(consumer=consumer, consumer_generation_id=3)
    app.on_rebalance_complete.send = AsyncMock()
    app.flow_control.resume.side_effect = lambda: calls.append("empty queues")
    app._fetcher.maybe_start = AsyncMock()
    app.assignor.assigned_standbys.return_value = set()

    async def wait(coro: Any, timeout: float | None = None) -> None:
        await coro

    recovery = SimpleNamespace(
        app=app,
        log=Mock(),
        tables=Mock(values=Mock(return_value=[])),
        actives_for_table={},
        standbys_for_table={},
        completed=asyncio.Event(),
        _set_recovery_ended=Mock(),
        _wait=wait,
        _is_changelog_tp=lambda tp: tp.topic.endswith("-changelog"),
    )
    asyncio.run(recovery_class.on_recovery_completed(recovery, 3))  # type: ignore[arg-type]

    streams = {stream, committed, uncommitted}
    if recovery_class is PipelineRecovery:
        # Partitions without a committed offset go back to their beginning (fix 3).
        assert calls == [
            "perform_seek",
            ("seek to beginning", {stream, uncommitted}),
            "empty queues",
            ("resume", streams),
            "resume_flow",
        ]
        assert recovery.completed.is_set()
        app.on_rebalance_end.assert_called_once_with()
    else:  # Faust's own: the streams run during the seek, then their queues are emptied
        assert calls == [("resume", streams), "perform_seek", "empty queues", "resume_flow"]


def consumer_counting_acks() -> PipelineConsumer:
    """A consumer (not started) with the state Faust's ``ack`` keeps."""
    consumer = PipelineConsumer.__new__(PipelineConsumer)
    consumer.app = Mock()
    consumer.app.topics.acks_enabled_for.return_value = True
    consumer._committed_offset = defaultdict(lambda: None)
    consumer._acked = defaultdict(list)
    consumer._acked_index = defaultdict(set)
    consumer._unacked_messages = set()
    consumer._n_acked = 0
    consumer._waiting_for_ack = None
    consumer._abandoned = WeakSet()
    return consumer


def message(offset: int, *, tracked: bool) -> ConsumerMessage:
    received = ConsumerMessage("orders", 0, offset, 0.0, None, None, b"k", b"v", None)
    received.tracked = tracked
    return received


def test_an_ack_counts_only_for_a_message_a_stream_handed_out() -> None:
    """A stream acknowledges the messages it skips (stale generation, stopped flow):
    their offsets must not reach a commit (fix 4)."""
    consumer = consumer_counting_acks()
    handed_out, skipped = message(3, tracked=True), message(4, tracked=False)
    assert consumer.ack(handed_out) is True
    assert consumer.ack(skipped) is False
    assert consumer._acked[TP("orders", 0)] == [3]


@pytest.mark.parametrize("first", ["the agent processing it", "the agent skipping it"])
def test_a_message_one_of_two_agents_skipped_is_released_by_both_and_never_counted(
    first: str,
) -> None:
    """Two agents read the partition: one took the message (tracked), the other skips it
    (a fetch from before the rebalance). The revocation waits for the first alone, and
    the offset stays uncommitted: fetched again, for the agent that skipped it (fix 7)."""
    consumer = consumer_counting_acks()
    taken = message(3, tracked=True)
    taken.incref(2)  # one reference per agent, as the conductor and DirectDelivery take
    consumer._unacked_messages.add(taken)
    releases = [lambda: taken.ack(consumer), lambda: consumer.abandon(taken)]
    if first == "the agent skipping it":
        releases.reverse()

    releases[0]()
    assert taken in consumer._unacked_messages  # the other agent still holds it
    releases[1]()

    assert taken not in consumer._unacked_messages
    assert consumer._acked[TP("orders", 0)] == [] and consumer._n_acked == 0


def test_an_arrived_event_skipped_after_another_agent_took_it_is_abandoned() -> None:
    arrivals, queue, app = arrived_events(generation=8)
    stale = queued_event(queue, 0, generation=7)
    stale.message.tracked = True  # another agent of the worker took it
    fresh = queued_event(queue, 1, generation=8)
    assert asyncio.run(arrivals.take(10)) == [fresh]
    app.consumer.abandon.assert_called_once_with(stale.message)


def test_the_partitions_held_are_those_of_the_agents_topics_none_while_stopped() -> None:
    """``ArrivedEvents.held`` reads the names of the topics the stream's channel (a clone of
    a ``faust.Topic``) reads, and the consumer's assignment."""
    assert faust.Topic(MagicMock(), topics=["orders"]).clone().topics == ["orders"]
    arrivals, _, app = arrived_events(generation=4)
    arrivals.channel = SimpleNamespace(topics=("orders",))
    app.consumer.assignment.return_value = {TP("orders", 0), TP("orders", 3), TP("other", 1)}
    held = arrivals.held()
    assert (held.generation, held.partitions) == (4, frozenset({0, 3}))
    app.flow_control.suspend()
    assert arrivals.held().partitions == frozenset()


def test_fetch_states_read_aiokafkas_subscription_state() -> None:
    orders_0, orders_1 = TopicPartition("order_created", 0), TopicPartition("order_created", 1)

    async def read() -> dict[TP, FetchState]:
        subscription = SubscriptionState()
        subscription.subscribe({"order_created"})
        subscription.assign_from_subscribed({orders_0, orders_1})
        fetched = subscription.subscription.assignment.state_value(orders_0)
        fetched.reset_to(40)
        fetched.highwater = 45
        # orders_1 has no position yet (waiting for its committed offset): left out.
        consumer = SimpleNamespace(_subscription=subscription)
        app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=consumer)))
        return fetch_states(cast(Any, app))

    assert asyncio.run(read()) == {TP("order_created", 0): FetchState(position=40, highwater=45)}


def test_fetch_states_before_the_consumer_started_are_none() -> None:
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=None)))
    assert fetch_states(cast(Any, app)) == {}


def arrived_events(
    generation: int = 7, flowing: bool = True, acking: bool = True
) -> tuple[ArrivedEvents, ThrowableQueue[EventT[Any]], Mock]:
    """ArrivedEvents over a real channel queue; the app, its consumer and sensors mocked."""
    flow = FlowControlEvent()
    if flowing:
        flow.resume()
    queue: ThrowableQueue[EventT[Any]] = ThrowableQueue(maxsize=100, flow_control=flow)
    app = Mock(consumer_generation_id=generation, flow_control=flow)
    app.topics.acks_enabled_for = lambda topic: acking
    stream = SimpleNamespace(app=app, channel=SimpleNamespace(queue=queue))
    return ArrivedEvents(cast(StreamT[Any], stream)), queue, app


def queued_event(queue: ThrowableQueue[EventT[Any]], offset: int, generation: int = 7) -> Mock:
    message = ConsumerMessage(
        "orders", 0, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation
    )
    event = Mock(message=message)
    queue.put_nowait(event)
    return event


def test_arrived_events_are_taken_in_bulk_up_to_the_limit_and_tracked() -> None:
    arrivals, queue, app = arrived_events()
    queued = [queued_event(queue, offset) for offset in range(5)]

    taken = asyncio.run(arrivals.take(3))

    assert taken == queued[:3]
    assert queue.qsize() == 2
    assert all(event.message.tracked for event in taken)
    assert [call.args[0] for call in app.consumer.track_message.call_args_list] == [
        event.message for event in taken
    ]


def test_arrived_events_of_another_generation_or_while_stopped_are_never_tracked() -> None:
    """A fetch from before a rebalance: fetched again from the committed offset, never
    acknowledged (that would let the commit pass it)."""
    arrivals, queue, app = arrived_events(generation=8)
    stale = queued_event(queue, 0, generation=7)
    current = queued_event(queue, 1, generation=8)
    assert asyncio.run(arrivals.take(10)) == [current]
    assert not stale.message.tracked
    stale.ack.assert_not_called()

    arrivals, queue, app = arrived_events(flowing=False)
    stopped = queued_event(queue, 0)

    async def take_while_stopped() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(arrivals.take(10), 0.05)

    asyncio.run(take_while_stopped())
    assert not stopped.message.tracked
    app.consumer.track_message.assert_not_called()


def test_arrived_events_end_when_the_actor_is_cancelled() -> None:
    """Faust's Actor.cancel() throws StopAsyncIteration into the channel: the stream ends."""
    arrivals, queue, _ = arrived_events()

    async def cancelled_while_waiting() -> list[EventT[Any]]:
        taking = asyncio.ensure_future(arrivals.take(10))
        await asyncio.sleep(0)
        queue._throw(StopAsyncIteration())
        return await taking

    assert asyncio.run(cancelled_while_waiting()) == []


def test_an_acknowledged_event_calls_the_message_out_sensor_when_it_was_the_last() -> None:
    arrivals, queue, app = arrived_events()
    last, not_last = queued_event(queue, 0), queued_event(queue, 1)
    last.ack.return_value, not_last.ack.return_value = True, False

    arrivals.ack(last)
    arrivals.ack(not_last)

    app.sensors.on_message_out.assert_called_once_with(
        last.message.tp, last.message.offset, last.message
    )


ORDERS_3 = TP("unit.orders", 3)


def delivering(*schemas: faust.Schema[Any, Any], maxsize: int = 100) -> tuple[Any, list[Any]]:
    """A real app whose conductor has a channel of each schema reading ``ORDERS_3``
    (the flow on), and those channels."""
    app = cast(Any, create_app(shop(Settings(app_id="unit", topic_prefix="unit."))))
    app.conf.stream_buffer_maxsize = maxsize
    channels = [app.topic(ORDERS_3.topic, schema=schema) for schema in schemas]
    app.topics._tp_index[ORDERS_3] = set(channels)
    app.flow_control.resume()
    return app, channels


def order_message(offset: int) -> ConsumerMessage:
    """A message of ``ORDERS_3`` as Faust's aiokafka driver makes it (with aiokafka's
    TopicPartition)."""
    return ConsumerMessage(
        ORDERS_3.topic,
        ORDERS_3.partition,
        offset,
        0.0,
        0,
        [("h", b"1")],
        b"k",
        b"v",
        None,
        tp=TopicPartition(ORDERS_3.topic, ORDERS_3.partition),
    )


def test_a_message_one_agent_reads_goes_into_its_queue_as_the_conductor_puts_it() -> None:
    app, (channel,) = delivering(RawSchema())
    direct, through_conductor = order_message(5), order_message(5)

    async def deliver() -> tuple[Any, Any]:
        assert DirectDelivery(app)(direct)
        await ConductorCompiler().build(app.topics, ORDERS_3, {channel})(through_conductor)
        return channel.queue.get_nowait(), channel.queue.get_nowait()

    ours, faust_s = asyncio.run(deliver())

    assert type(ours) is type(faust_s) and ours.message is direct
    assert (ours.app, ours.key, ours.value, ours.headers) == (
        faust_s.app,
        faust_s.key,
        faust_s.value,
        faust_s.headers,
    )
    assert direct.refcount == through_conductor.refcount == 1


def test_a_nearly_full_queue_pauses_the_partition_until_it_drains_as_the_conductor_does() -> None:
    app, (channel,) = delivering(RawSchema(), maxsize=5)  # pressure from 4 queued
    consumer = app.consumer
    consumer._active_partitions = {ORDERS_3}
    deliver = DirectDelivery(app)

    delivered = [deliver(order_message(offset)) for offset in range(6)]

    assert delivered == [True] * 5 + [False]  # the sixth waits for room, in the conductor
    assert consumer._buffered_partitions == {ORDERS_3} and not consumer._active_partitions

    async def drain() -> None:
        while not channel.queue.empty():
            await channel.queue.get()

    asyncio.run(drain())
    assert consumer._get_active_partitions() == {ORDERS_3}  # Faust's TP, as Faust checks
    assert all(type(tp) is TP for tp in consumer._active_partitions)
    assert not consumer._buffered_partitions


def test_a_message_two_agents_read_goes_into_both_queues_as_the_conductor_puts_it() -> None:
    app, channels = delivering(RawSchema(), RawSchema())
    direct, through_conductor = order_message(5), order_message(5)

    async def deliver() -> list[Any]:
        assert DirectDelivery(app)(direct)
        await ConductorCompiler().build(app.topics, ORDERS_3, set(channels))(through_conductor)
        return [channel.queue.get_nowait() for channel in channels for _ in range(2)]

    first, faust_first, second, faust_second = asyncio.run(deliver())

    # One event shared by both queues, as the conductor shares its own (same key and value
    # types); the message referenced once per agent, each acknowledging it once.
    assert first is second and faust_first is faust_second and first.message is direct
    assert (first.key, first.value) == (faust_first.key, faust_first.value)
    assert direct.refcount == through_conductor.refcount == 2


def test_a_revocation_clearing_the_queues_releases_what_another_agent_took() -> None:
    """Faust clears the agents' queues at a revocation, then waits for every message taken
    to be acknowledged: one agent took and acknowledged the message, the other's copy is
    dropped from its queue. Its reference is released, the offset not counted (fix 7)."""
    app, channels = delivering(RawSchema(), RawSchema())
    consumer = app.consumer
    message = order_message(5)
    assert DirectDelivery(app)(message)
    taken = channels[0].queue.get_nowait()
    message.tracked = True  # as ArrivedEvents tracks what it takes
    consumer._unacked_messages.add(message)
    taken.ack()
    assert message in consumer._unacked_messages  # the other agent's copy, queued

    app.flow_control.suspend()
    app.flow_control.clear()

    assert channels[1].queue.empty() and message.refcount == 0
    assert message not in consumer._unacked_messages
    assert consumer._n_acked == 0


@pytest.mark.parametrize(
    "why", ["flow stopped", "a full queue", "another schema", "subscribing", "producer buffer"]
)
def test_where_the_conductor_could_wait_the_message_is_left_to_it(why: str) -> None:
    schemas: list[faust.Schema[Any, Any]] = [RawSchema()]
    if why in ("a full queue", "another schema"):
        schemas.append(RawSchema())
    if why == "another schema":
        schemas[1] = faust.Schema(key_serializer="raw", value_serializer="raw")
    app, channels = delivering(*schemas, maxsize=1 if why == "a full queue" else 100)
    if why == "flow stopped":
        app.flow_control.suspend()
    if why == "a full queue":
        channels[1].queue.put_nowait(Mock())
    if why == "producer buffer":
        app.producer.buffer.pending.put_nowait(Mock())
    message = order_message(5)

    async def deliver() -> bool:
        if why == "subscribing":
            async with app.topics._tp_to_callback_lock:
                return DirectDelivery(app)(message)
        return DirectDelivery(app)(message)

    assert not asyncio.run(deliver())
    assert channels[0].queue.empty() and message.refcount == 0


def test_rows_written_in_one_batch_are_read_back_by_faust_and_by_partition(tmp_path: Path) -> None:
    settings = Settings(app_id="unit", topic_prefix="unit.", data_dir=tmp_path)
    app = create_app(shop(settings))
    store = cast(Any, next(iter(app.pipeline_tables.values())).data)

    write_partition(store, 2, [(b"u1", b"row 1"), (b"u2", b"row 2")])

    assert store[b"u1"] == b"row 1" and store[b"u2"] == b"row 2"  # Faust's own read
    read = partition_reader(store)
    assert read(2, b"u2") == b"row 2"
    assert read(1, b"u2") is None


def test_a_partition_is_scanned_in_key_order_and_written_with_deletes(tmp_path: Path) -> None:
    settings = Settings(app_id="unit", topic_prefix="unit.", data_dir=tmp_path)
    app = create_app(shop(settings))
    table = next(iter(app.pipeline_tables.values()))
    store = FaustPartitionStore(table)
    store.write(2, [(b"b", b"2"), (b"a", b"1"), (b"c", b"3"), (b"d", b"4")])
    store.write(1, [(b"b", b"other partition")])
    store.write(2, [(b"c", None), (b"e", b"5")])
    assert list(store.scan(2, b"b", b"e")) == [(b"b", b"2"), (b"d", b"4")]
    assert list(store.scan(2, b"a", b"\xff")) == [
        (b"a", b"1"),
        (b"b", b"2"),
        (b"d", b"4"),
        (b"e", b"5"),
    ]
    assert store.read(2, b"c") is None


def changelog_event(
    topic: str, partition: int, offset: int, key: bytes, value: bytes | None
) -> Any:
    return SimpleNamespace(
        key=key,
        value=value,
        message=SimpleNamespace(
            tp=TP(topic, partition), partition=partition, offset=offset, key=key, value=value
        ),
    )


@pytest.mark.parametrize("store_url", ["rocksdb://", "memory://"])
def test_fausts_recovery_and_standbys_apply_a_tombstone_as_a_delete(
    tmp_path: Path, store_url: str
) -> None:
    settings = Settings(app_id="unit", topic_prefix="unit.", data_dir=tmp_path, store=store_url)
    app = create_app(shop(settings))
    table = next(iter(app.pipeline_tables.values()))
    store = FaustPartitionStore(table)
    topic = store.changelog_topic
    store.write(2, [(b"w1", b"window"), (b"w2", b"window")])
    cast(Any, table.data).apply_changelog_batch(
        [changelog_event(topic, 2, 7, b"w1", None), changelog_event(topic, 2, 8, b"w3", b"new")],
        lambda key: key,
        lambda value: value,
    )
    assert list(store.scan(2, b"a", b"\xff")) == [(b"w2", b"window"), (b"w3", b"new")]


class ChangelogConsumer:
    """A confluent-kafka consumer reading one changelog partition: records, then its end."""

    def __init__(self, records: list[tuple[bytes, bytes | None]]) -> None:
        self.records = records

    def list_topics(self, topic: str, timeout: float) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions={2: None})})

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return 0, len(self.records)

    def assign(self, partitions: list[Any]) -> None:
        self.topic = partitions[0].topic

    def consume(self, limit: int, timeout: float) -> list[Any]:
        consumed = [
            Mock(
                topic=Mock(return_value=self.topic),
                partition=Mock(return_value=2),
                error=Mock(return_value=None),
                key=Mock(return_value=key),
                value=Mock(return_value=value),
                offset=Mock(return_value=offset),
            )
            for offset, (key, value) in enumerate(self.records)
        ]
        end = Mock(topic=Mock(return_value=self.topic), partition=Mock(return_value=2))
        end.error.return_value.code.return_value = KafkaError._PARTITION_EOF
        end.offset.return_value = len(self.records)
        self.records = []
        return [*consumed, end]

    def close(self) -> None:
        pass


def test_the_bulk_restore_deletes_a_row_whose_tombstone_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(app_id="unit", topic_prefix="unit.", data_dir=tmp_path)
    app = create_app(shop(settings))
    table = next(iter(app.pipeline_tables.values()))
    store = FaustPartitionStore(table)
    store.write(2, [(b"expired", b"restored earlier")])
    records: list[tuple[bytes, bytes | None]] = [
        (b"kept", b"row"),
        (b"expired", None),
        (b"gone", b"row"),
        (b"gone", None),
    ]
    monkeypatch.setattr(
        "pipeline.engine.restore.Consumer", lambda config: ChangelogConsumer(records)
    )
    restore(settings, {store.changelog_topic: cast(Any, table.data)}, {(store.changelog_topic, 2)})
    assert list(store.scan(2, b"a", b"\xff")) == [(b"kept", b"row")]


def test_under_exactly_once_the_consumer_reads_committed_records_and_faust_commits_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(shop(Settings(app_id="unit", processing_guarantee="exactly_once")))
    assert isinstance(app.transport, TransactionalTransport)
    assert app.transport.Consumer is TransactionalConsumer

    async def made() -> Any:
        # What Faust makes (read_uncommitted), as aiokafka keeps it until its Fetcher starts.
        made = aiokafka.AIOKafkaConsumer(isolation_level="read_uncommitted")
        monkeypatch.setattr(
            PipelineConsumerThread, "_create_worker_consumer", lambda self, transport: made
        )
        thread = TransactionalConsumerThread.__new__(TransactionalConsumerThread)
        return thread._create_worker_consumer(cast(Any, None))

    assert asyncio.run(made())._isolation_level == "read_committed"
    assert asyncio.run(TransactionalConsumer.commit(cast(Any, None))) is False


def test_the_consumer_fetches_with_the_apps_fetch_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(shop(Settings(app_id="unit", fetch_max_wait_ms=7)))
    assert cast(Any, app).fetch_max_wait_ms == 7

    async def made() -> Any:
        # What Faust makes (its fixed 1,500 ms), as aiokafka keeps it until its Fetcher starts.
        made = aiokafka.AIOKafkaConsumer(fetch_max_wait_ms=1500)
        monkeypatch.setattr(
            AIOKafkaConsumerThread, "_create_worker_consumer", lambda self, transport: made
        )
        thread = PipelineConsumerThread.__new__(PipelineConsumerThread)
        thread.app = app
        return thread._create_worker_consumer(cast(Any, None))

    assert asyncio.run(made())._fetch_max_wait_ms == 7


def test_the_group_membership_is_read_from_aiokafkas_coordinator() -> None:
    coordinator = GroupCoordinator.__new__(GroupCoordinator)
    coordinator.group_id, coordinator.generation, coordinator.member_id = "unit", 4, "m-1"
    coordinator._group_instance_id = "worker-1"
    consumer = SimpleNamespace(_coordinator=coordinator)
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=consumer)))
    assert group_member(cast(Any, app)) == GroupMember("unit", 4, "m-1", "worker-1")
    idle = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=None)))
    assert group_member(cast(Any, idle)) is None


def test_the_group_membership_is_kept_alive_while_the_app_handles_an_assignment() -> None:
    """aiokafka would heartbeat only once the callback returned: a longer callback than the
    session timeout (a bulk restore, a wait for a commit in doubt) lost the membership."""
    coordinator = GroupCoordinator.__new__(GroupCoordinator)
    coordinator.member_id, coordinator.generation = "m-1", 3
    coordinator._heartbeat_task = None
    coordinator._heartbeat_interval_ms, coordinator._session_timeout_ms = 10, 15_000
    coordinator._retry_backoff_ms, coordinator._max_poll_interval = 100, 300.0
    coordinator._subscription = SimpleNamespace(fetcher_idle_time=0.0)
    coordinator.ensure_coordinator_known = AsyncMock()
    coordinator._do_heartbeat = AsyncMock(return_value=True)
    thread = PipelineConsumerThread.__new__(PipelineConsumerThread)
    thread._consumer = cast(Any, SimpleNamespace(_coordinator=coordinator))
    thread.thread_loop = cast(Any, None)
    read_in_step = ReadInStep([{"orders", "users"}], max_wait_s=10.0)
    read_in_step.delivered(("orders", 0), 5_000)
    thread.app = cast(Any, SimpleNamespace(read_in_step=read_in_step))
    heartbeats_during_callback: list[int] = []

    async def app_callback(loop: Any, assigned: set[TP], generation_id: int) -> None:
        await asyncio.sleep(0.2)
        heartbeats_during_callback.append(coordinator._do_heartbeat.await_count)

    thread.consumer = cast(Any, SimpleNamespace(threadsafe_partitions_assigned=app_callback))

    async def assign() -> None:
        await thread.on_partitions_assigned({TP("orders", 0)}, 3)
        # What aiokafka does after the callback: the task already runs, none is added.
        running = coordinator._heartbeat_task
        coordinator._start_heartbeat_task()
        assert coordinator._heartbeat_task is running
        await coordinator._stop_heartbeat_task()

    asyncio.run(assign())
    assert heartbeats_during_callback[0] >= 5
    # The partitions are read in step afresh, from their committed offsets: first one
    # record of each, for its timestamp.
    both = {TP("orders", 0), TP("users", 0)}
    assert read_in_step.next_fetch(both, lambda tp: True, 500) == (both, 1)
