"""The shop pipeline's Faust app (pipeline.services.shop)::

    faust -A pipeline.app worker -l info

    user_registered ──notifications──▶ [addresses table] ──▶ notifications (welcome)
    order_created ──notifications (joined with the address; held until known)──▶ notifications
    order_created ──orders──▶ [user_order_stats table] ──▶ user_order_stats
                          └─▶ <app_id>-order_lines_by_sku (re-keyed by SKU) ─┐
    stock_adjusted ─────────────────────────────────────────────────stock──┴▶ [stock table]
                                                          ──▶ stock_levels, low_stock_alerts
    anything that cannot be processed ──▶ <source topic>.dlq

Settings come from the environment (pipeline.settings).
"""

from __future__ import annotations

from pipeline.services import shop
from pipeline.settings import Settings
from pipeline.worker import create_app

app = create_app(shop(Settings.from_env()))
