"""Event time: when an event happened, as an agent reads it (docs/windows.md).

An agent takes it from a timestamp field of its records (``EventTime.field("created_at")``)
or, by default, from the record's Kafka timestamp. The runtime stamps every record an
event causes with the event's time, re-keyed ones included, so the next agent's default
reads the same time back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.streaming.ports import Message

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class EventTimeMissing(ValueError):
    """A record without the event time its agent reads: it is dead-lettered."""


def millis(value: datetime | int) -> int:
    """A timestamp as epoch milliseconds: an aware ``datetime`` (Avro ``timestamp-millis``
    as decoded) or an int already in milliseconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise EventTimeMissing(f"a naive datetime is not an event time: {value}")
        return (value - _EPOCH) // _MILLISECOND
    return value


def iso(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC, for messages."""
    return (_EPOCH + ms * _MILLISECOND).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class EventTime:
    """Where an agent's events take their event time from: a field of the record, or
    (``name`` None) the record's Kafka timestamp."""

    name: str | None = None

    @classmethod
    def field(cls, name: str) -> EventTime:
        """The record's ``name`` field: a ``timestamp-millis`` (or an int of milliseconds),
        read from a decoded record (a mapping) or an internal topic's value (an attribute)."""
        return cls(name)

    def of(self, value: Any, message: Message) -> int:
        """The event time of ``value`` (``message`` decoded), in epoch milliseconds."""
        name = self.name
        if name is None:
            timestamp = message.timestamp
            if timestamp is None:
                raise EventTimeMissing("the record has no Kafka timestamp")
            return round(timestamp * 1000)
        found = value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)
        if not isinstance(found, datetime | int) or isinstance(found, bool):
            raise EventTimeMissing(
                f"the record's event time field {name!r} is {found!r}, not a timestamp"
            )
        return millis(found)


KAFKA_TIMESTAMP = EventTime()
