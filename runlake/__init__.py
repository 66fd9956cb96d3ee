"""runlake: an event-sourced run-history store.

Components append events; runlake keeps them in a Parquet log, folds them into
DuckDB tables and views, and serves history and statistics over HTTP.
"""

__version__ = "0.1.0"
