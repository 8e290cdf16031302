"""The pure parts of the read_committed tally (pipeline.dev.audit)."""

from __future__ import annotations

from collections import Counter

from pipeline.dev import expected
from pipeline.dev.audit import Tally, excess, failures, final_levels, level_steps


def test_excess_counts_more_and_fewer_than_wanted() -> None:
    have = Counter({"a": 2, "b": 1})
    want = Counter({"a": 1, "b": 1, "c": 3})
    assert excess(have, want) == (1, 3)
    assert excess(want, want) == (0, 0)


def test_level_steps_are_the_changes_between_levels_from_zero() -> None:
    assert level_steps({"A": [10, 8, 5], "B": [-1]}) == Counter(
        {("A", 10): 1, ("A", -2): 1, ("A", -3): 1, ("B", -1): 1}
    )


def test_a_repeated_level_is_a_step_of_zero_and_a_lost_one_merges_two() -> None:
    assert level_steps({"A": [10, 10, 8]}) == Counter({("A", 10): 1, ("A", 0): 1, ("A", -2): 1})
    assert level_steps({"A": [10, 5]}) == Counter({("A", 10): 1, ("A", -5): 1})


def level(sku: str, available: int, at: int) -> dict[str, object]:
    return {"sku": sku, "available": available, "updated_at": at}


def test_a_batch_processed_again_supersedes_its_first_levels_in_the_final_history() -> None:
    # At 1 A fell from 12 to 9 (threshold 10), at 2 rose to 14: those levels were
    # delivered, then the worker died and the batch was processed again.
    read = [level("A", 12, 0), level("A", 9, 1), level("B", 3, 5), level("A", 14, 2)]
    read += [level("A", 9, 1), level("A", 14, 2), level("A", 11, 3)]

    history = final_levels(read)

    assert history == {"A": [(12, 0), (9, 1), (14, 2), (11, 3)], "B": [(3, 5)]}
    # One crossing (at 1), where the levels as read cross twice (12 → 9, 14 → 9).
    assert expected.crossed_at([available for available, _ in history["A"]], 10) == [1]
    assert expected.crossings([r["available"] for r in read if r["sku"] == "A"], 10) == [9, 9]


def test_failures_missing_always_duplicates_only_under_exactly_once() -> None:
    tallies = {
        "fine": Tally(3, 0, 0),
        "repeated": Tally(4, 1, 0),
        "lost": Tally(2, 0, 1),
    }
    assert failures(tallies, "at_least_once") == ["lost"]
    assert failures(tallies, "exactly_once") == ["repeated", "lost"]


def test_a_tally_reads_as_the_demo_prints_it() -> None:
    assert str(Tally(3000, 0, 2)) == "3000 records, 0 duplicates, 2 missing"
