"""Summaries of messages and attempts per time bucket: what the statistics API reads.

The raw tables keep one row per message and per attempt; these keep counts per bucket, so
a statistics query reads a few thousand summary rows whatever the traffic was
(docs/api.md, *Statistics*).  Rows are upserted as the counted rows are written:

* ``attempt_stats`` by the delivery engine, one statement per recorded batch
  (:mod:`webhooks_core.statistics`);
* ``message_stats`` by a statement-level trigger on ``messages`` (migrations 0008 and
  0015), one upsert per statement that stores messages.

Each key ends with ``shard`` (the writing connection's backend pid modulo
:data:`~webhooks_core.statistics.SHARDS`): two transactions writing the same endpoint's
minute at once update different rows instead of waiting for each other's commit.  Readers
sum over shards.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, Integer, SmallInteger, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from webhooks_core.models.base import Base


class AttemptStat(Base):
    """Attempts of one endpoint, event type, outcome and status class in one bucket.

    ``width`` is the bucket's length in seconds (60: a minute, 3600: an hour, 86400: a day);
    every attempt is counted in one row of each width.  ``final_state`` is the delivery's
    state the attempt left it in (delivered, retrying, dead, cancelled).
    ``latency_histogram[i]`` counts the attempts whose latency fell in bucket ``i`` of
    :data:`~webhooks_core.statistics.LATENCY_BOUNDS_MS`.
    """

    __tablename__ = "attempt_stats"
    __table_args__ = (
        Index("ix_attempt_stats_application", "application_id", "width", "bucket"),
        Index("ix_attempt_stats_width_bucket", "width", "bucket"),
    )

    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    width: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True)
    event_type: Mapped[str] = mapped_column(String(128), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    status_class: Mapped[str] = mapped_column(String(8), primary_key=True)
    final_state: Mapped[str] = mapped_column(String(16), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    application_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE")
    )
    attempts: Mapped[int] = mapped_column(Integer)
    latency_sum_ms: Mapped[float]
    latency_histogram: Mapped[list[int]] = mapped_column(ARRAY(Integer))


class MessageStat(Base):
    """Messages accepted for one application (null: broadcasts) and event type in a bucket."""

    __tablename__ = "message_stats"
    __table_args__ = (
        Index(
            "uq_message_stats_key",
            "application_id",
            "width",
            "bucket",
            "event_type",
            "shard",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
        Index("ix_message_stats_width_bucket", "width", "bucket"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    application_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE")
    )
    width: Mapped[int] = mapped_column(Integer)
    bucket: Mapped[datetime]
    event_type: Mapped[str] = mapped_column(String(128))
    shard: Mapped[int] = mapped_column(SmallInteger)
    messages: Mapped[int] = mapped_column(Integer)
