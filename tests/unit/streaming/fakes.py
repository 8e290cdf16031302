"""What the runtime uses of a Faust table, without Faust: rows in a dict, and the last
changelog offset stored per partition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class FakeStore(dict[bytes, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[int, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp.partition] = offset


@dataclass
class FakeTopic:
    name: str

    def get_topic_name(self) -> str:
        return self.name


@dataclass
class FakeTable:
    changelog_topic: FakeTopic = field(default_factory=lambda: FakeTopic("stock-changelog"))
    data: FakeStore = field(default_factory=FakeStore)
