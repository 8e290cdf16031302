"""The fast path: what Faust does per message and per event, done here per batch or at
once where nothing would wait. Same steps, same order, fewer awaits; what each replaces,
and what it costs in Faust, is in docs/faust-findings.md ("Per-event costs of the consume
path").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, EventT, Message, StreamT
from mode import Service, ServiceT
from mode.utils.queues import ThrowableQueue

from pipeline.streaming.ports import Assignment, Event


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


# Faust's fetch loop lets other work run after this many messages.
FETCH_LOOP_YIELD_EVERY = 100


class DirectDrainConsumer(faust_aiokafka.Consumer):
    """Faust's consumer whose fetch loop hands each message straight to its agent's queue
    where nothing would wait (``DirectDelivery``)."""

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
    """What Faust's conductor does with a message of a partition our agents read, done at
    once: the message referenced once per agent, its event (made as ``RawSchema`` makes
    it; one for every agent, as the conductor shares it between channels of the same key
    and value types) put into each agent's queue, with the conductor's pressure callbacks,
    which pause fetching the partition while a queue is nearly full.

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
            or self.subscribing.locked()
            or not self.flow_is_active()
            or self.producer_buffer is None
            or self.producer_buffer.qsize()
        ):
            return False
        for channel in channels:
            if not isinstance(channel.schema, RawSchema) or channel.queue.full():
                return False
        on_pressure_high, on_pressure_drop = self._pressure_callbacks(message)
        message.incref(len(channels))
        event = self.make_event(message)
        for channel in channels:
            channel.queue.put_nowait_enhanced(
                event, on_pressure_high=on_pressure_high, on_pressure_drop=on_pressure_drop
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


class AbandoningConsumer(Protocol):
    """The consumer of pipeline.engine.fixes (fix 7)."""

    def abandon(self, message: Message) -> None: ...


class ArrivedEvents:
    """An agent's events, taken in bulk from the queue its Faust stream reads, with what
    the stream's iterator does for each event, done here for a batch.

    Faust's stream hands out one event per step, with an ``await sleep(0)``, sensors, a
    context variable and its bookkeeping each time: most of a worker's time once the
    rest was batched. Taken here, as there, are only the events of the current consumer
    generation while the flow is on (a fetch from before a rebalance may still be queued).
    The others are left alone: never tracked nor acknowledged, they are fetched again
    from the committed offset. Acknowledging one would let the commit skip past it; one
    another agent took already is abandoned instead (``_skip``).
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
        self.channel = stream.channel

    async def take(self, limit: int) -> list[Event]:
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

    def held(self) -> Assignment:
        """The partitions of the agent's source topics this worker is assigned; none
        while the flow is stopped (a rebalance under way)."""
        app = self.app
        if not app.flow_control.is_active():
            return Assignment(app.consumer_generation_id, frozenset())
        topics = set(self.channel.topics)  # type: ignore[attr-defined]
        assigned = self.consumer.assignment()
        held = frozenset(tp.partition for tp in assigned if tp.topic in topics)
        return Assignment(app.consumer_generation_id, held)

    def _current(self, taken: list[EventT[Any]]) -> list[Event]:
        """The events of ``taken`` to process, now tracked. Taken without a pause, so
        the flow and the generation are the same for them all."""
        app = self.app
        if not app.flow_control.is_active():
            self._skip(taken)
            return []
        generation = app.consumer_generation_id
        events: list[Event] = []
        track = self.consumer.track_message
        acks_enabled_for = self.acks_enabled_for
        for event in taken:
            message = event.message
            if message.generation_id != generation:
                self._skip([event])
                continue
            if not message.tracked and acks_enabled_for(message.topic):
                message.tracked = True
                track(message)  # into the unacked set; the message-in sensor
            events.append(event)
        return events

    def _skip(self, skipped: list[EventT[Any]]) -> None:
        """Leave ``skipped`` unprocessed. A message another agent reading its partition
        took already is abandoned (``PipelineConsumer.abandon``): the revocation would
        otherwise wait for this agent's acknowledgement for ever."""
        for event in skipped:
            if event.message.tracked:
                cast(AbandoningConsumer, self.consumer).abandon(event.message)

    def ack(self, event: Event) -> None:
        """Acknowledge ``event`` (its offset may now be committed), as the stream does."""
        if cast(EventT[Any], event).ack():
            message = cast(EventT[Any], event).message
            self.on_message_out(message.tp, message.offset, message)
