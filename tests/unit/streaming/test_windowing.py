"""Window arithmetic and the windowed table's key layout."""

from __future__ import annotations

from pipeline.streaming.windowing import (
    Clock,
    Hopping,
    Tumbling,
    WindowedRows,
    clock_key,
    index_key,
    index_range,
    indexed,
    key_range,
    window_key,
    window_start,
)


def test_an_event_falls_in_the_windows_aligned_to_the_epoch_that_hold_it() -> None:
    assert Tumbling(size_ms=10).starts(25) == [20]
    assert Tumbling(size_ms=10).starts(-1) == [-10]
    assert Hopping(size_ms=10, step_ms=4).starts(9) == [0, 4, 8]
    assert len(Hopping(size_ms=24, step_ms=1).starts(100)) == 24


def test_a_window_closes_at_end_plus_grace_and_expires_at_start_plus_retention() -> None:
    windows = Tumbling(size_ms=10, grace_ms=2, retention_ms=30)
    assert windows.closed_below(21) == 10  # [10, 20) closes at 22
    assert windows.closed_below(22) == 20
    assert windows.expired_below(29) == 0 and windows.expired_below(30) == 10
    assert Tumbling(size_ms=10, grace_ms=2).retention == 12


def test_one_keys_windows_are_one_ordered_range_apart_from_every_other_key() -> None:
    keys = sorted(
        window_key(key, start)
        for key in (b"a", b"ab", b"a\x00", b"b")
        for start in (-3_600_000, 0, 7, 2**40)
    )
    low, high = key_range(b"a")
    assert [key for key in keys if low <= key < high] == [
        window_key(b"a", start) for start in (-3_600_000, 0, 7, 2**40)
    ]
    assert window_start(window_key(b"ab", -3_600_000)) == -3_600_000
    # Reserved keys sort after every UTF-8 key's windows.
    assert max(keys) < clock_key(0) < index_key(0, -5, b"a") < index_key(1, -5, b"a")


def test_the_index_of_a_partition_is_ordered_by_start() -> None:
    entries = sorted(index_key(3, start, key) for start in (20, -10, 0) for key in (b"b", b"a"))
    assert [indexed(entry) for entry in entries] == [
        (-10, b"a"),
        (-10, b"b"),
        (0, b"a"),
        (0, b"b"),
        (20, b"a"),
        (20, b"b"),
    ]
    low, high = index_range(3, 0, 20)
    assert [indexed(e) for e in entries if low <= e < high] == [(0, b"a"), (0, b"b")]


def test_rows_clocks_and_index_entries_are_told_apart() -> None:
    rows = WindowedRows(lambda row: str(row).encode(), lambda data: int(data))
    clock = Clock(5, 0, -10)
    assert rows.decode(rows.encode(clock)) == clock
    assert rows.decode(rows.encode(41)) == 41
