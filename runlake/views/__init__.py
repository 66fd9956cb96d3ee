"""Layer 3: the base tables, the materialized views and the queries over them.

VIEWS lists every view once, in dependency order: the fold refreshes them in
this order, replay rebuilds them in this order, and the tests check each one.
"""

from runlake.views import (
    batch_stats,
    group_stats,
    metric_daily,
    metric_stats,
    overview,
    run_metric_summary,
    runs,
    tests,
)
from runlake.views.view import View

VIEWS: tuple[View, ...] = (
    runs.VIEW,
    group_stats.MODEL_VIEW,
    group_stats.HARDWARE_VIEW,
    batch_stats.VIEW,
    metric_daily.DAILY,
    metric_daily.HIST,
    metric_stats.HIST_ALL,  # from metric_hist
    metric_stats.VIEW,  # from metric_daily and metric_hist_all
    overview.VIEW,
    tests.VIEW,  # from runs (a run's commit), tags and results
    run_metric_summary.VIEW,  # from metrics (and the batch's points)
)

__all__ = ["VIEWS", "View"]
