"""statistics: day rows beside the minute and hour rows

Revision ID: 0015_statistics_day_rows
Revises: 0014_due_by_application
Create Date: 2026-12-01 22:00:00

* ``attempt_stats`` and ``message_stats`` get rows of a third width, a day (86400 s): the
  statistics API reads them for day buckets (the 7-day window's default), 7 rows per key
  instead of 168 hour rows.  The engine's upsert writes them from now on
  (webhooks_core.statistics.WIDTHS); the ``messages`` trigger's function is replaced to
  count a day row too.
* Existing history is counted into day rows here, from the hour rows (one row per key and
  day, shard 0; readers sum over shards), never from the raw attempts.  Day rows already
  there (written by a newer engine before this ran) are rebuilt, not added to.  Attempts
  and messages recorded by an older engine after this commits are in the minute and hour
  rows only: run it with the engine stopped, as every migration.

The downgrade deletes the day rows and restores the trigger's function of 0008.
"""

from __future__ import annotations

from alembic import op

revision = '0015_statistics_day_rows'
down_revision = '0014_due_by_application'
branch_labels = None
depends_on = None

# Kept here as text (a migration does not change when the code does): widths and shards as
# webhooks_core.statistics (WIDTHS, SHARDS) at the time of writing.
COUNT_MESSAGES = """
CREATE OR REPLACE FUNCTION webhooks_count_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_stats AS s (application_id, width, bucket, event_type, shard, messages)
    SELECT m.application_id, w.width,
           date_bin(make_interval(secs => w.width), m.created_at, TIMESTAMPTZ '2000-01-01'),
           m.event_type, pg_backend_pid() % 8, count(*)
    FROM new_messages m CROSS JOIN (VALUES {widths}) AS w(width)
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (application_id, width, bucket, event_type, shard)
    DO UPDATE SET messages = s.messages + EXCLUDED.messages;
    RETURN NULL;
END;
$$;
"""
DAY = "date_bin(interval '1 day', s.bucket, TIMESTAMPTZ '2000-01-01')"
HISTOGRAM = "ARRAY[" + ", ".join(
    f"sum(s.latency_histogram[{i}])::int" for i in range(1, 14)
) + "]"
DAY_ATTEMPTS = f"""
INSERT INTO attempt_stats (endpoint_id, width, bucket, event_type, outcome, status_class,
                           final_state, shard, application_id, attempts, latency_sum_ms,
                           latency_histogram)
SELECT s.endpoint_id, 86400, {DAY}, s.event_type, s.outcome, s.status_class, s.final_state,
       0, s.application_id, sum(s.attempts), sum(s.latency_sum_ms), {HISTOGRAM}
FROM attempt_stats s
WHERE s.width = 3600
GROUP BY s.endpoint_id, 3, s.event_type, s.outcome, s.status_class, s.final_state,
         s.application_id
"""
DAY_MESSAGES = f"""
INSERT INTO message_stats (application_id, width, bucket, event_type, shard, messages)
SELECT s.application_id, 86400, {DAY}, s.event_type, 0, sum(s.messages)
FROM message_stats s
WHERE s.width = 3600
GROUP BY s.application_id, 3, s.event_type
"""


def upgrade() -> None:
    op.execute("DELETE FROM attempt_stats WHERE width = 86400")
    op.execute("DELETE FROM message_stats WHERE width = 86400")
    op.execute(DAY_ATTEMPTS)
    op.execute(DAY_MESSAGES)
    op.execute(COUNT_MESSAGES.format(widths="(60), (3600), (86400)"))


def downgrade() -> None:
    op.execute(COUNT_MESSAGES.format(widths="(60), (3600)"))
    op.execute("DELETE FROM attempt_stats WHERE width = 86400")
    op.execute("DELETE FROM message_stats WHERE width = 86400")
