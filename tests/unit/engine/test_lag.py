from __future__ import annotations

from typing import Any, cast

from faust.types import TP, StoreT

from pipeline.engine.lag import Changelog, consumer_lag, standby_lag
from pipeline.engine.membership import FetchState

ORDERS_0, ORDERS_1 = TP("order_created", 0), TP("order_created", 1)
STOCK_CHANGELOG_2 = TP("shop-stock-changelog", 2)


class PersistedOffsets:
    """What lag reads of a table's store."""

    def __init__(self, offsets: dict[TP, int]) -> None:
        self.offsets = offsets

    def persisted_offset(self, tp: TP) -> int | None:
        return self.offsets.get(tp)


def stock_changelog(offsets: dict[TP, int]) -> dict[str, Changelog]:
    store = cast(StoreT[Any, Any], PersistedOffsets(offsets))
    return {"shop-stock-changelog": Changelog("stock", store)}


def test_consumer_lag_is_what_the_source_partitions_have_not_fetched() -> None:
    fetched = {
        ORDERS_0: FetchState(position=40, highwater=45),
        ORDERS_1: FetchState(position=7, highwater=7),
        STOCK_CHANGELOG_2: FetchState(position=3, highwater=9),
    }
    assert consumer_lag(fetched, {"shop-stock-changelog"}) == {ORDERS_0: 5, ORDERS_1: 0}


def test_standby_lag_is_what_the_table_has_not_applied() -> None:
    fetched = {STOCK_CHANGELOG_2: FetchState(position=9, highwater=12)}
    # The store holds records up to offset 8: 9, 10 and 11 are still to apply.
    applied_to_8 = stock_changelog({STOCK_CHANGELOG_2: 8})
    assert standby_lag(fetched, [STOCK_CHANGELOG_2], applied_to_8) == {("stock", 2): 3}
    assert standby_lag(fetched, [STOCK_CHANGELOG_2], stock_changelog({})) == {("stock", 2): 12}


def test_a_standby_not_fetched_yet_has_no_lag_rather_than_zero() -> None:
    assert standby_lag({}, [STOCK_CHANGELOG_2], stock_changelog({})) == {}
