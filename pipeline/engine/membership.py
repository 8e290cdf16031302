"""Who this worker is in its consumer group, and where its consumer is in each partition,
read from aiokafka's state without a call into the consumer's thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT

from pipeline.streaming.ports import GroupMember


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


def has_records_to_read(consumer: aiokafka.AIOKafkaConsumer, tp: TP, reads_committed: bool) -> bool:
    """Whether ``tp`` has records the consumer fetched and has not handed out, or, as far
    as its last fetch knows, records still to fetch (its position below the partition's
    end: the last stable offset when it reads committed records only). Unknown counts as
    records to read: a partition not fetched yet."""
    if tp in consumer._fetcher._records:
        return True
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    state = assignment.state_value(tp) if assignment is not None else None
    if state is None:
        return False  # not assigned (any more): nothing will come
    end = state.lso if reads_committed else state.highwater
    if not state.has_valid_position or end is None:
        return True
    return cast(bool, state.position < end)
