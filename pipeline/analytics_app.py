"""The analytics service's Faust app (pipeline.services.order_analytics)::

    faust -A pipeline.analytics_app worker -l info

    order_created ──analytics_sales──▶ <app id>-sales_by_sku ──sku_sales──▶ [hour windows]
                                                                  └──▶ sku_sales_hourly
    order_created ──user_spend──▶ [24 h windows, hourly]

Its own consumer group, ``<PIPELINE_APP_ID>-analytics``: started, stopped and scaled on
its own, it reads ``order_created`` from the beginning the first time it runs.
"""

from __future__ import annotations

from pipeline.services import analytics_settings, order_analytics
from pipeline.settings import Settings
from pipeline.worker import create_app

app = create_app(order_analytics(analytics_settings(Settings.from_env())))
