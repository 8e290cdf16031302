from __future__ import annotations

import pytest

from pipeline.app import UnsupportedGuarantee, create_app
from pipeline.settings import Settings


def test_topology_and_raw_table_keys() -> None:
    app = create_app(Settings(app_id="unit", topic_prefix="unit."))
    assert sorted(agent.name for agent in app.agents.values()) == [
        "notifications",
        "orders",
        "stock",
    ]
    for table in app.tables.values():
        # Raw keys: the changelog and the web router hash the bytes the producer hashed.
        assert table.changelog_topic.prepare_key(b"u1", None)[0] == b"u1"
        assert table.partitions == 8


def test_exactly_once_is_refused_with_a_reason() -> None:
    with pytest.raises(UnsupportedGuarantee, match="idempotent"):
        create_app(Settings(processing_guarantee="exactly_once"))
