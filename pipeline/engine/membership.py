"""Who this worker is in its consumer group, and where its consumer is in each partition,
read from aiokafka's state without a call into the consumer's thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

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
