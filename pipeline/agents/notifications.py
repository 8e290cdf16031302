"""user_registered → notifications (the welcome email request)."""

from __future__ import annotations

from faust.types import AppT, Message, StreamT

from pipeline.outputs import Outputs, millis
from pipeline.processing import EventRunner
from pipeline.rules import welcome_notification


def register(app: AppT, outputs: Outputs, runner: EventRunner) -> None:
    names = outputs.names
    source = app.topic(
        names.user_registered,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def handle(message: Message) -> None:
        user = await outputs.codec.decode(message.topic, message.value)
        request = welcome_notification(user, millis(user["registered_at"]))
        await outputs.send_all([outputs.record(names.notifications, user["user_id"], request)])

    @app.agent(source, name="notifications")
    async def process_registrations(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await runner.run(event.message, handle)
