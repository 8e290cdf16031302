"""Hopping windows kept as panes (``combine``) through the public harness: for random
inputs the same windows, finals, late events and misses as the same agent kept per window;
partial lateness, closing, retention, replays and crashes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from pipeline.agents.analytics import USER_SPEND
from pipeline.domain.analytics import UserSpend, add_spend, merge_spend
from pipeline.settings import Settings
from pipeline.streaming.event_time import EventTime
from pipeline.streaming.testing import ServiceTest
from pipeline.streaming.topology import Emit, Topology
from pipeline.streaming.windowing import Hopping, Window, pane_key
from pipeline.topics import TopicNames

HOUR = 3_600_000
MINUTE = 60_000
T0 = 500_000 * HOUR
TOPICS = TopicNames.from_settings(Settings(app_id="unit"))
TABLE = "user_spend"
LABELS = {"table": TABLE, "topic": TOPICS.order_created}


def spend_service(
    paned: bool,
    *,
    grace_ms: int = 0,
    retention_ms: int = 8 * HOUR,
    partitions: int = 1,
    max_batch: int = 2_000,
) -> Topology:
    """Users' spend in 4-hour windows every hour; each closed window's final to
    ``sku_sales_hourly`` (the user as its SKU)."""
    settings = Settings(
        app_id="unit",
        partitions=partitions,
        max_batch_events=max_batch,
        window_idle_close_ms=60_000,
    )
    topology = Topology(settings)
    windows = Hopping(size_ms=4 * HOUR, step_ms=HOUR, grace_ms=grace_ms, retention_ms=retention_ms)
    spend = topology.windowed(
        TABLE,
        table=USER_SPEND,
        windows=windows,
        event_time=EventTime.field("created_at"),
        emits=[TOPICS.sku_sales_hourly],
        combine=merge_spend if paned else None,
    )

    @spend.on(TOPICS.order_created)
    def order(user: str, order: Any, window: Window, row: UserSpend | None) -> UserSpend:
        return add_spend(row, order)

    @spend.on_close
    def final(user: str, window: Window, row: UserSpend) -> Sequence[Emit]:
        record = {
            "sku": user,
            "window_start": window.start,
            "window_end": window.end,
            "units": row.orders,
            "revenue_cents": row.spent_cents,
            "orders": row.orders,
        }
        return [Emit(TOPICS.sku_sales_hourly, user, record)]

    return topology


def send(service: ServiceTest, user: str, created_at: int, cents: int = 100) -> None:
    service.send(
        TOPICS.order_created,
        user,
        {
            "order_id": f"o{created_at}-{cents}",
            "user_id": user,
            "items": [{"sku": "A", "quantity": 1, "unit_price_cents": cents}],
            "total_cents": cents,
            "created_at": created_at,
        },
    )


USERS = ("u0", "u1", "u2")


def windows(service: ServiceTest) -> dict[str, list[tuple[int, UserSpend, bool]]]:
    return {
        user: [(w.window.start, w.row, w.final) for w in service.windows(TABLE, user)]
        for user in USERS
    }


def counted(service: ServiceTest) -> tuple[float, ...]:
    return (
        service.metric("pipeline_late_events_total", **LABELS),
        service.metric("pipeline_late_window_misses_total", **LABELS),
        service.metric("pipeline_windows_closed_total", table=TABLE),
        service.metric("pipeline_windows_expired_total", table=TABLE),
    )


def outcome(service: ServiceTest) -> tuple[Any, ...]:
    letters = [(d.key, d.value, d.error, d.reason) for d in service.dead_letters("order_created")]
    finals = service.emitted(TOPICS.sku_sales_hourly)
    return windows(service), finals, letters, counted(service)


PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)
SLOW = [HealthCheck.too_slow]
# An order (user, minutes after T0, cents); None: let the agents read what they have;
# a number: then let that many minutes of wall time pass with no event (idle close).
Step = tuple[str, int, int] | int | None
orders = st.tuples(st.sampled_from(USERS), st.integers(0, 16 * 60), st.integers(1, 9_999))
steps = st.lists(
    st.one_of(orders, orders, st.none(), st.sampled_from([30, 90])), min_size=8, max_size=40
)


@settings(max_examples=120, deadline=None, phases=PHASES, suppress_health_check=SLOW)
@given(
    steps=steps,
    grace=st.sampled_from([0, 10 * MINUTE, 90 * MINUTE]),
    partitions=st.sampled_from([1, 2]),
    max_batch=st.sampled_from([1, 3, 2_000]),
)
def test_panes_give_what_windows_give_for_any_input(
    steps: list[Step], grace: int, partitions: int, max_batch: int
) -> None:
    options = {"grace_ms": grace, "partitions": partitions, "max_batch": max_batch}
    paned = ServiceTest(spend_service(True, **options))
    windowed = ServiceTest(spend_service(False, **options))
    finals: dict[tuple[str, int], UserSpend] = {}
    for step in [*steps, None]:
        if isinstance(step, tuple):
            user, minutes, cents = step
            for service in (paned, windowed):
                send(service, user, T0 + minutes * MINUTE, cents)
            continue
        for service in (paned, windowed):
            service.run()
            if step is not None:
                service.quiet(step * 60)
        assert outcome(paned) == outcome(windowed)
        # A closed window's value never changes, until it is deleted.
        for user, found in windows(paned).items():
            for start, row, final in found:
                if final:
                    assert finals.setdefault((user, start), row) == row
    # Read again from the start: every order a replay, nothing counted twice (the batches
    # of replays close and expire what a quiet batch's stream time reached, in both alike).
    rows = {(user, start): row for user, kept in windows(paned).items() for start, row, _ in kept}
    for service in (paned, windowed):
        service.rewind(TOPICS.order_created)
        service.run()
    assert outcome(paned) == outcome(windowed)
    for user, kept in windows(paned).items():
        assert all(rows[user, start] == row for start, row, _ in kept)


@settings(max_examples=100, deadline=None, phases=PHASES, suppress_health_check=SLOW)
@given(
    orders=st.lists(orders, max_size=30),
    max_batch=st.sampled_from([1, 4]),
    kept=st.floats(0, 1),
    paned=st.booleans(),
)
@example(  # a window updated, closed and expired in one batch
    orders=[("u0", 0, 1)] * 5 + [("u0", 480, 1)], max_batch=4, kept=0.8, paned=True
)
@example(orders=[("u0", 0, 1)] * 5 + [("u0", 480, 1)], max_batch=4, kept=0.8, paned=False)
def test_a_crash_at_any_point_of_the_changelog_loses_and_doubles_nothing(
    orders: list[tuple[str, int, int]], max_batch: int, kept: float, paned: bool
) -> None:
    """At-least-once: the worker dies with its changelog written up to any record (its
    store lost, its offsets not committed). Restored from that changelog and reading its
    input again, it ends with the same windows, and repeats only finals it emitted; with
    panes or without."""
    service = ServiceTest(spend_service(paned, grace_ms=30 * MINUTE, max_batch=max_batch))
    for user, minutes, cents in orders:
        send(service, user, T0 + minutes * MINUTE, cents)
    service.run()
    finals = service.emitted(TOPICS.sku_sales_hourly)
    changelog = service.topics.logs.get(("unit-user_spend-changelog", 0), [])
    del changelog[round(len(changelog) * kept) :]
    restarted = service.restarted()
    restarted.rewind(TOPICS.order_created)
    restarted.run()
    assert windows(restarted) == windows(service)
    repeated = restarted.emitted(TOPICS.sku_sales_hourly)
    assert repeated[: len(finals)] == finals
    assert {repr(final) for final in repeated} == {repr(final) for final in finals}


def test_a_record_late_for_some_windows_counts_in_the_open_ones_apart_from_the_closed() -> None:
    service = ServiceTest(spend_service(True, retention_ms=7 * HOUR))
    send(service, "u1", T0 + 3 * HOUR + 10 * MINUTE, 1)  # windows T0, +1h, +2h, +3h
    send(service, "u1", T0 + 6 * HOUR, 10)  # stream time closes the windows of T0..T0+2h
    send(service, "u1", T0 + 3 * HOUR + 20 * MINUTE, 100)  # late for three of its windows
    service.run()
    assert windows(service)["u1"] == [
        (T0, UserSpend(1, 1), True),
        (T0 + HOUR, UserSpend(1, 1), True),
        (T0 + 2 * HOUR, UserSpend(1, 1), True),
        (T0 + 3 * HOUR, UserSpend(111, 3), False),
        (T0 + 4 * HOUR, UserSpend(10, 1), False),
        (T0 + 5 * HOUR, UserSpend(10, 1), False),
        (T0 + 6 * HOUR, UserSpend(10, 1), False),
    ]
    finals = service.emitted(TOPICS.sku_sales_hourly)
    assert [final["revenue_cents"] for _, final in finals] == [1, 1, 1]
    assert counted(service) == (0, 3, 3, 0)
    # The pane's shared row, and the late record's own, which only T0+3h on reads.
    late_rows = [pane_key(b"u1", T0 + 3 * HOUR, T0), pane_key(b"u1", T0 + 3 * HOUR, T0 + 3 * HOUR)]
    assert set(late_rows) <= set(service.stored_keys(TABLE))

    # Retention 7 h: at T0+9h30 the windows of T0..T0+2h are deleted, the pane of T0+3h
    # stays for its last window (T0+3h), which goes at T0+10h, and the pane with it.
    send(service, "u1", T0 + 9 * HOUR + 30 * MINUTE, 1_000)
    service.run()
    assert windows(service)["u1"][0] == (T0 + 3 * HOUR, UserSpend(111, 3), True)
    assert set(late_rows) <= set(service.stored_keys(TABLE))
    send(service, "u1", T0 + 10 * HOUR, 1_000)
    service.run()
    starts = [start for start, _, _ in windows(service)["u1"]]
    assert starts == [T0 + 4 * HOUR + hour * HOUR for hour in range(7)]
    assert not set(late_rows) & set(service.stored_keys(TABLE))
    assert service.metric("pipeline_windows_expired_total", table=TABLE) == 4
    changelog = service.topics.records("unit-user_spend-changelog")
    assert len([record for record in changelog if record.value is None]) == 2 * 2
    assert windows(service.restarted()) == windows(service)


def test_a_record_late_for_all_its_windows_is_dead_lettered() -> None:
    service = ServiceTest(spend_service(True))
    send(service, "u1", T0 + 8 * HOUR)
    send(service, "u1", T0 + 3 * HOUR + 59 * MINUTE)  # its last window closed at T0+8h
    service.run()
    (letter,) = service.dead_letters(TOPICS.order_created)
    assert letter.error == "LateEvent"
    assert "its last window [2027-01-15T11:00:00.000Z, 2027-01-15T15:00:00.000Z)" in letter.reason
    assert counted(service)[:2] == (1, 0)
