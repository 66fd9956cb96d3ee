"""Per (component, run_id, name): the run's metric summary that `/run/{id}` and the
run documents of an export show (docs/views.md, `run_metric_summary`).

`count`, `sum` (the mean is sum / count), `min`, `max` of the points' values; `unit`
the least of their units (null when none has one); `last` the value of the point with
the greatest (ts, seq), kept with that `last_ts` and `last_seq` so that a batch's
points merge in without reading the run's earlier ones: reading them all cost every
page load of a run with a long series a scan of all its points.

A batch adds its points into existing rows (`add`); only the runs a delete in the
batch may have removed are recomputed from `metrics` (the run's points after the
delete are all there by then). Every row's `last_seq` lies within its run's
`first_seq`…`last_seq` (a point is one of the run's events), so a read of one run
can filter on it as on the base tables' `seq`.
"""

from runlake.views.view import View, same

KEY = ("component", "run_id", "name")

CREATE = """
CREATE TABLE IF NOT EXISTS run_metric_summary (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL, name VARCHAR NOT NULL, unit VARCHAR,
    count BIGINT NOT NULL, sum DOUBLE NOT NULL, min DOUBLE NOT NULL, max DOUBLE NOT NULL,
    last DOUBLE NOT NULL, last_ts TIMESTAMP NOT NULL, last_seq BIGINT NOT NULL)"""

# The summary of the points of {source}, per key. The last point is the greatest
# (ts, seq, value) struct: seq is unique, so value never decides, and one struct max
# costs less than arg_max by (ts, seq) for each of value and seq. fsum (Kahan): a plain
# sum's last bits follow the order DuckDB adds in, which a rebuild does not keep.
_SUMMARY = """
SELECT component, run_id, name, unit, count, sum, min, max,
       l.value AS last, l.ts AS last_ts, l.seq AS last_seq
FROM (SELECT component, run_id, name, min(unit) AS unit, count(*) AS count, fsum(value) AS sum,
             min(value) AS min, max(value) AS max,
             max(struct_pack(ts := ts, seq := seq, value := value)) AS l
      FROM {source} GROUP BY ALL)"""

# Runs a delete of this batch may have removed: those it names, and those whose
# batch_id was, before the batch or by one of its `run` events, a batch it deletes
# (a superset of the runs removed: recomputing a run is always right).
_GROUPS = """
SELECT component, run_id FROM batch_all WHERE type = 'delete' AND run_id IS NOT NULL
UNION SELECT o.component, o.run_id FROM old_keys o JOIN batch_all d
    ON d.type = 'delete' AND d.component = o.component AND d.batch_id = o.batch_id
UNION SELECT r.component, r.run_id FROM batch_all r JOIN batch_all d
    ON r.type = 'run' AND d.type = 'delete' AND d.component = r.component
    AND d.batch_id = r.batch_id"""

# The batch's points of the runs not recomputed: none was deleted, so all are in
# `metrics` too; read from the batch itself, not from `metrics`.
_NEW = """(SELECT * FROM batch_all b WHERE type = 'metric' AND NOT EXISTS (
    SELECT 1 FROM g WHERE g.component = b.component AND g.run_id = b.run_id))"""

_LATER = "(p.last_ts > v.last_ts OR (p.last_ts = v.last_ts AND p.last_seq > v.last_seq))"

VIEW = View(
    name="run_metric_summary",
    create=CREATE,
    select=_SUMMARY.format(source="metrics r {scope}"),
    scope="SEMI JOIN g ON r.component = g.component AND r.run_id = g.run_id",
    groups=_GROUPS,
    match=same("v", "g", "component", "run_id"),
    add=f"""
MERGE INTO run_metric_summary v USING ({_SUMMARY.format(source=_NEW)}) p
ON {same("v", "p", *KEY)}
WHEN MATCHED THEN UPDATE SET
    unit = least(v.unit, p.unit), count = v.count + p.count, sum = v.sum + p.sum,
    min = least(v.min, p.min), max = greatest(v.max, p.max),
    last = CASE WHEN {_LATER} THEN p.last ELSE v.last END,
    last_ts = CASE WHEN {_LATER} THEN p.last_ts ELSE v.last_ts END,
    last_seq = CASE WHEN {_LATER} THEN p.last_seq ELSE v.last_seq END
WHEN NOT MATCHED THEN INSERT BY NAME""",
    # A replay writes it in last_seq order (as the fold appends new rows, roughly):
    # zone maps on last_seq then skip the row groups outside a run's span. Sorting
    # by (component, run_id, name) instead made the rebuild much slower.
    order="last_seq",
)
