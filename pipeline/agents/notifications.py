"""user_registered → notifications (the welcome email request)."""

from __future__ import annotations

from collections.abc import Sequence

from faust.types import AppT, StreamT

from pipeline.domain.rules import welcome_notification
from pipeline.streaming.outputs import Outputs, millis
from pipeline.streaming.processing import Event, EventRunner, Prepared


def register(app: AppT, outputs: Outputs, runner: EventRunner) -> None:
    names = outputs.names
    source = app.topic(
        names.user_registered,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def handle(events: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        requests = []
        for event in events:
            user = await outputs.codec.decode(event.message.topic, event.message.value)
            request = welcome_notification(user, millis(user["registered_at"]))
            requests.append(outputs.record(names.notifications, user["user_id"], request))
        return Prepared(await outputs.send(requests))

    @app.agent(source, name="notifications")
    async def process_registrations(stream: StreamT[bytes]) -> None:
        await runner.consume(stream, handle)
