"""The loyalty-points service's Faust app (pipeline.services.loyalty_points)::

    faust -A pipeline.points_app worker -l info

    order_created ──points──▶ [points table] ──▶ user_points

Its own consumer group, ``<PIPELINE_APP_ID>-points``: started, stopped and scaled
on its own, it reads ``order_created`` from the beginning the first time it runs.
"""

from __future__ import annotations

from pipeline.services import loyalty_points, points_settings
from pipeline.settings import Settings
from pipeline.worker import create_app

app = create_app(loyalty_points(points_settings(Settings.from_env())))
