"""Rules of the wrong shape or emitting the wrong values, for mypy to refuse
(tests/unit/streaming/test_rule_types.py)."""

from typing import Any

from pipeline.agents.analytics import SKU_SALES
from pipeline.agents.orders import USER_STATS
from pipeline.domain.analytics import SkuSales
from pipeline.domain.encoding import decode_order_line, encode_order_line
from pipeline.domain.rules import OrderLine, UserOrderStats
from pipeline.settings import Settings
from pipeline.streaming.topology import Emit, Emitted, Topology, Update
from pipeline.streaming.windowing import Tumbling, Window

topology = Topology(Settings())
orders = topology.agent("orders", table=USER_STATS)
stateless = topology.agent("n")


@orders.on("x")
def forgets_the_row(key: str, value: dict[str, Any]) -> Update[UserOrderStats]:
    return Update(UserOrderStats(0, 0, ""))


@orders.on("y")
def wrong_row(key: str, value: dict[str, Any], row: UserOrderStats | None) -> Update[int]:
    return Update(1)


@stateless.on("z")
def returns_a_row(key: str, value: dict[str, Any]) -> Update[int]:
    return Update(1)


@stateless.on("w")
def fine(key: str, value: dict[str, Any]) -> list[Emit]:
    return []


windowed = topology.windowed("sales", table=SKU_SALES, windows=Tumbling(size_ms=10))


@windowed.on("v")
def returns_an_update(
    key: str, value: Any, window: Window, row: SkuSales | None
) -> Update[SkuSales]:
    return Update(SkuSales())


@windowed.on_close
def forgets_the_window(key: str, row: SkuSales) -> list[Emit]:
    return []


@windowed.on("u")
def counts(key: str, value: Any, window: Window, row: SkuSales | None) -> SkuSales:
    return SkuSales()


lines = topology.repartition("lines", encode_order_line, decode_order_line)


@stateless.on("t")
def emits_a_row(key: str, value: dict[str, Any]) -> list[Emitted]:
    return [Emit("user_order_stats", key, UserOrderStats(0, 0, ""))]


@stateless.on("s")
def rekeys_the_wrong_value(key: str, value: dict[str, Any]) -> list[Emitted]:
    return [lines.emit(key, SkuSales())]


@stateless.on("r")
def emits_records_and_lines(key: str, value: dict[str, Any]) -> list[Emitted]:
    line = OrderLine("sku-1", 1, "o1", 0)
    return [lines.emit(line.sku, line), Emit("user_order_stats", key, {"user_id": key})]


def merges_other_rows(earlier: UserOrderStats, later: UserOrderStats) -> UserOrderStats:
    return later


topology.windowed("spend", table=SKU_SALES, windows=Tumbling(size_ms=10), combine=merges_other_rows)
