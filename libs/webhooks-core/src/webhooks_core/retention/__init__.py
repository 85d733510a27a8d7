"""Retention: what the platform keeps, for how long, and the task that enforces it.

One run (:func:`.run.run_retention`; the scheduler runs it every
``WEBHOOKS_RETENTION_INTERVAL_SECONDS``, ``python -m webhooks_core.retention run`` on demand):

1. makes the day partitions of ``attempts`` from yesterday to
   ``WEBHOOKS_RETENTION_PARTITIONS_AHEAD_DAYS`` ahead (:mod:`.partitions`);
2. drops each day partition older than the attempt retention of every application, unless
   it holds an attempt of a delivery that is not terminal (kept, counted, retried next run);
3. deletes, in bounded batches, the attempts of applications with a shorter retention than
   the longest, the messages past their application's message retention (their deliveries,
   attempts, dead letters and idempotency keys go with them) and empties the payloads past
   the payload retention (:mod:`.rows`) -- never for a message with an open delivery.

The statistics summaries (``attempt_stats``, ``message_stats``) are never touched: they are
the long-term record.  docs/retention.md says what is kept for how long and how to size it.
"""
