from __future__ import annotations

from pipeline.web.views import copy_lag


def test_copy_lag_counts_the_changelog_records_a_copy_has_not_applied() -> None:
    assert copy_lag(end=10, persisted=9) == 0  # holds offsets 0..9 of 10
    assert copy_lag(end=10, persisted=6) == 3
    assert copy_lag(end=10, persisted=None) == 10  # holds nothing yet
    assert copy_lag(end=0, persisted=None) == 0  # an empty changelog: nothing to miss
    assert copy_lag(end=None, persisted=6) is None  # the broker did not say
    assert copy_lag(end=-1001, persisted=6) is None  # nor did it here (OFFSET_INVALID)
