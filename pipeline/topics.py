"""The shop's topics by name: the contract's (shared by every service) and the shop
pipeline's internal ones, under a deployment's prefix and app id (pipeline.kafka.naming).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.kafka.naming import TopicNaming


@dataclass(frozen=True)
class TopicNames(TopicNaming):
    """Every topic the shop's services read or write, by name."""

    @property
    def user_registered(self) -> str:
        return self.contract("user_registered")

    @property
    def order_created(self) -> str:
        return self.contract("order_created")

    @property
    def stock_adjusted(self) -> str:
        return self.contract("stock_adjusted")

    @property
    def user_order_stats(self) -> str:
        return self.contract("user_order_stats")

    @property
    def stock_levels(self) -> str:
        return self.contract("stock_levels")

    @property
    def low_stock_alerts(self) -> str:
        return self.contract("low_stock_alerts")

    @property
    def notifications(self) -> str:
        return self.contract("notifications")

    @property
    def user_points(self) -> str:
        return self.contract("user_points")

    @property
    def sku_sales_hourly(self) -> str:
        return self.contract("sku_sales_hourly")

    @property
    def order_lines_by_sku(self) -> str:
        """Order lines re-keyed by SKU, from the orders agent to the stock agent."""
        return self.internal("order_lines_by_sku")
