"""The notifications agent through the public harness: welcomes, and each order confirmed at
the address of its user's latest registration, held while the user is not registered."""

from __future__ import annotations

from typing import Any

from pipeline.domain.rules import UserAddress
from pipeline.services import shop
from pipeline.settings import Settings
from pipeline.streaming.joined import Joined
from pipeline.streaming.testing import ServiceTest
from tests.unit.agents.test_shop import at, order

SETTINGS = Settings(app_id="unit", join_hold_max_records=3, join_hold_max_age_ms=60_000)


def user(user_id: str, email: str, registered_at: int = 5) -> dict[str, Any]:
    return {"user_id": user_id, "email": email, "name": "U", "registered_at": registered_at}


def confirmations(service: ServiceTest) -> list[tuple[str, str, str, Any]]:
    """(user, order, address, requested_at) of each confirmation, in order."""
    return [
        (key, note["order_id"], note["address"], note["requested_at"])
        for key, note in service.emitted("notifications")
        if note["template"] == "order_confirmed"
    ]


def test_an_order_of_a_registered_user_is_confirmed_at_their_address() -> None:
    service = ServiceTest(shop(SETTINGS))
    service.send("user_registered", "u1", user("u1", "u1@shop.example"))
    service.run()
    service.send("order_created", "u1", order(1, "u1", [("A", 1)]))
    service.run()
    welcome, confirmation = (note for _, note in service.emitted("notifications"))
    assert (welcome["template"], welcome["order_id"]) == ("welcome", None)
    assert confirmation == {
        "user_id": "u1",
        "channel": "email",
        "template": "order_confirmed",
        "address": "u1@shop.example",
        "requested_at": at(1_700_000_000_001),
        "order_id": "u1-o1",
    }
    assert service.join_records("notifications", "held") == 0


def test_orders_before_the_registration_are_held_then_confirmed_in_placement_order() -> None:
    service = ServiceTest(shop(SETTINGS))
    for number in (1, 2, 3):
        service.send("order_created", "u1", order(number, "u1", [("A", 1)]))
    service.run()
    assert confirmations(service) == []
    held = service.row("addresses", "u1")
    assert held.row is None
    assert [record.offset for record in held.held] == [0, 1, 2]

    service.send("user_registered", "u1", user("u1", "u1@shop.example"))
    service.run()
    assert [(order_id, address) for _, order_id, address, _ in confirmations(service)] == [
        ("u1-o1", "u1@shop.example"),
        ("u1-o2", "u1@shop.example"),
        ("u1-o3", "u1@shop.example"),
    ]
    assert service.row("addresses", "u1") == Joined(UserAddress("u1@shop.example"))
    counts = [service.join_records("notifications", what) for what in ("held", "released")]
    assert counts == [3, 3]
    # The orders agent, reading the same topic, did not wait.
    assert service.row("user_order_stats", "u1").order_count == 3


def test_a_new_registration_changes_the_address_for_later_orders_only() -> None:
    service = ServiceTest(shop(SETTINGS))
    service.send("user_registered", "u1", user("u1", "old@shop.example"))
    service.run()
    service.send("order_created", "u1", order(1, "u1", [("A", 1)]))
    service.run()
    service.send("user_registered", "u1", user("u1", "new@shop.example", registered_at=9))
    service.run()
    service.send("order_created", "u1", order(2, "u1", [("A", 1)]))
    service.run()
    assert [(order_id, address) for _, order_id, address, _ in confirmations(service)] == [
        ("u1-o1", "old@shop.example"),
        ("u1-o2", "new@shop.example"),
    ]
    welcomes = [
        note for _, note in service.emitted("notifications") if note["template"] == "welcome"
    ]
    assert len(welcomes) == 2  # each registration is welcomed, as before the join


def test_an_order_beyond_the_bound_is_dead_lettered_as_it_came_naming_the_user() -> None:
    service = ServiceTest(shop(SETTINGS))
    sent = [service.send("order_created", "u1", order(n, "u1", [("A", 1)])) for n in range(1, 5)]
    service.run()
    (letter,) = [
        letter
        for letter in service.dead_letters("order_created")
        if letter.agent == "notifications"
    ]
    fourth = service.topics.logs[("order_created", sent[3].partition)][sent[3].offset]
    assert (letter.key, letter.value) == (b"u1", fourth.value)
    assert letter.error == "HoldBoundExceeded"
    assert "'u1'" in letter.reason and "PIPELINE_JOIN_HOLD_MAX_RECORDS" in letter.reason
    assert service.join_records("notifications", "refused") == 1

    service.send("user_registered", "u1", user("u1", "u1@shop.example"))
    service.run()
    assert [order_id for _, order_id, _, _ in confirmations(service)] == ["u1-o1", "u1-o2", "u1-o3"]


def test_a_record_held_longer_than_the_age_bound_is_dead_lettered_when_the_key_moves_on() -> None:
    service = ServiceTest(shop(SETTINGS))
    first = service.send("order_created", "u1", order(1, "u1", [("A", 1)]), timestamp=1_000_000)
    service.send("order_created", "u1", order(2, "u1", [("A", 1)]), timestamp=1_030_000)
    service.run()
    # 61 s of event time after the first order: it expires, the second one does not.
    service.send("user_registered", "u1", user("u1", "u1@shop.example"), timestamp=1_061_000)
    service.run()
    assert [order_id for _, order_id, _, _ in confirmations(service)] == ["u1-o2"]
    (letter,) = service.dead_letters("order_created")
    stored = service.topics.logs[("order_created", first.partition)][first.offset]
    assert (letter.agent, letter.value, letter.error) == (
        "notifications",
        stored.value,
        "HoldBoundExceeded",
    )
    assert "within 60000 ms" in letter.reason and "held 61000 ms" in letter.reason
    assert service.join_records("notifications", "expired") == 1


def test_a_replay_neither_holds_nor_confirms_again() -> None:
    service = ServiceTest(shop(SETTINGS))
    service.send("order_created", "u1", order(1, "u1", [("A", 1)]))
    service.run()
    service.rewind("order_created")
    service.run()
    assert len(service.row("addresses", "u1").held) == 1

    service.send("user_registered", "u1", user("u1", "u1@shop.example"))
    service.send("order_created", "u1", order(2, "u1", [("A", 1)]))
    service.run()
    before = service.emitted("notifications")
    for topic in ("order_created", "user_registered"):
        service.rewind(topic)
    service.run()
    assert service.emitted("notifications") == before
    assert [order_id for _, order_id, _, _ in confirmations(service)] == ["u1-o1", "u1-o2"]


def test_a_held_order_whose_rule_fails_on_release_is_dead_lettered_alone() -> None:
    service = ServiceTest(shop(SETTINGS))
    good = order(1, "u1", [("A", 1)])
    service.send("order_created", "u1", good)
    service.send("order_created", "u1", {**order(2, "u1", [("A", 1)]), "order_id": ""})
    service.run()
    join = next(agent for agent in service.topology.agents if agent.name == "notifications")
    confirm = join.stream_rules["order_created"]

    def refusing(user_id: str, value: Any, address: Any) -> Any:
        if not value["order_id"]:
            raise ValueError("an order without an id")
        return confirm(user_id, value, address)

    join.stream_rules["order_created"] = refusing
    service.send("user_registered", "u1", user("u1", "u1@shop.example"))
    service.run()
    assert [order_id for _, order_id, _, _ in confirmations(service)] == ["u1-o1"]
    (letter,) = service.dead_letters("order_created")
    assert (letter.agent, letter.error, letter.reason) == (
        "notifications",
        "ValueError",
        "an order without an id",
    )
