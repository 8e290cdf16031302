"""The analytics service's rules, rows and encodings: sales per SKU and window, spend per
user and window. Pure: no I/O, no windows logic (the runtime picks the windows).

Layouts (big-endian), each after a u8 version=1:
- sale (re-keyed by SKU; the SKU is the record key): i64 quantity, i64 revenue_cents
- SKU sales row: i64 units, i64 revenue_cents, i64 orders
- user spend row: i64 spent_cents, i64 orders
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pipeline.domain.encoding import EncodingError
from pipeline.domain.rules import Order

VERSION = 1
_SALE = struct.Struct(">Bqq")
_SKU_SALES = struct.Struct(">Bqqq")
_SPEND = struct.Struct(">Bqq")


@dataclass(frozen=True)
class Sale:
    """One order's lines of one SKU, summed."""

    quantity: int
    revenue_cents: int


def sales_by_sku(order: Order) -> dict[str, Sale]:
    """The order's lines summed per SKU, in the order the SKUs first appear."""
    sales: dict[str, Sale] = {}
    for item in order["items"]:
        sku, quantity = str(item["sku"]), int(item["quantity"])
        revenue = quantity * int(item["unit_price_cents"])
        known = sales.get(sku, Sale(0, 0))
        sales[sku] = Sale(known.quantity + quantity, known.revenue_cents + revenue)
    return sales


@dataclass(frozen=True)
class SkuSales:
    units: int = 0
    revenue_cents: int = 0
    orders: int = 0


def add_sale(row: SkuSales | None, sale: Sale) -> SkuSales:
    """A SKU's sales in a window after one more order's sale of it."""
    current = row or SkuSales()
    return SkuSales(
        current.units + sale.quantity,
        current.revenue_cents + sale.revenue_cents,
        current.orders + 1,
    )


@dataclass(frozen=True)
class UserSpend:
    spent_cents: int = 0
    orders: int = 0


def add_spend(row: UserSpend | None, order: Order) -> UserSpend:
    """A user's spend in a window after one more order."""
    current = row or UserSpend()
    return UserSpend(current.spent_cents + int(order["total_cents"]), current.orders + 1)


def merge_spend(earlier: UserSpend, later: UserSpend) -> UserSpend:
    """A user's spend over two spans of time, from each's: ``add_spend`` folded over
    both spans' orders gives the same (associative; the order of orders does not matter)."""
    return UserSpend(earlier.spent_cents + later.spent_cents, earlier.orders + later.orders)


def sku_sales_record(sku: str, start_ms: int, end_ms: int, row: SkuSales) -> dict[str, Any]:
    """The ``shop.SkuSales`` record of a SKU's window ``[start_ms, end_ms)``."""
    return {
        "sku": sku,
        "window_start": start_ms,
        "window_end": end_ms,
        "units": row.units,
        "revenue_cents": row.revenue_cents,
        "orders": row.orders,
    }


def sales_view(row: SkuSales) -> dict[str, Any]:
    """A SKU's window as ``GET /skus/{sku}/sales`` answers it (beside start, end, final)."""
    return {"units": row.units, "revenue_cents": row.revenue_cents, "orders": row.orders}


def spend_view(row: UserSpend) -> dict[str, Any]:
    """A user's window as ``GET /users/{user_id}/spend`` answers it."""
    return {"spent_cents": row.spent_cents, "orders": row.orders}


def _unpack(layout: struct.Struct, data: bytes, what: str) -> tuple[int, ...]:
    if len(data) != layout.size or data[0] != VERSION:
        raise EncodingError(f"{what}: {len(data)} bytes of version {data[:1]!r}")
    return layout.unpack(data)[1:]


def encode_sale(sale: Sale) -> bytes:
    return _SALE.pack(VERSION, sale.quantity, sale.revenue_cents)


def decode_sale(sku: str, data: bytes) -> Sale:
    return Sale(*_unpack(_SALE, data, "sale"))


def encode_sku_sales(row: SkuSales) -> bytes:
    return _SKU_SALES.pack(VERSION, row.units, row.revenue_cents, row.orders)


def decode_sku_sales(data: bytes) -> SkuSales:
    return SkuSales(*_unpack(_SKU_SALES, data, "SKU sales row"))


def encode_user_spend(row: UserSpend) -> bytes:
    return _SPEND.pack(VERSION, row.spent_cents, row.orders)


def decode_user_spend(data: bytes) -> UserSpend:
    return UserSpend(*_unpack(_SPEND, data, "user spend row"))
