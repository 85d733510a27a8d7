"""Which endpoints receive a message: the one matching rule (Svix semantics).

* only ``kind='subscription'`` endpoints that are enabled and not deleted;
* an endpoint with no event types receives every type, otherwise only the types it lists;
* an endpoint without channels receives every message; an endpoint with channels receives
  only messages that share at least one channel with it;
* a message with an application goes to that application's endpoints only; a message without
  one (a broadcast, such as the people demo's events) goes to every application's endpoints.

:func:`receives` builds the rule as one SQLAlchemy condition over the ``endpoints`` table from
SQL expressions for the message's terms: bound values (one message, :func:`fanout.fan_out`),
columns of ``messages`` (a batch, :func:`fanout.accept_messages`) or named parameters, rendered
once to text for registration's prepared publish statement (:func:`receives_sql`).  The shape
of the condition is what lets the planner use the endpoint indexes (the GIN index on
``event_types`` through ``@>``, the partial index of all-types endpoints), so every path gets
the same plans from the same text.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    SQLColumnExpression,
    and_,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
)
from sqlalchemy.dialects.postgresql import ARRAY, TEXT, UUID, array, psycopg2
from sqlalchemy.orm import aliased
from sqlalchemy.orm.util import AliasedClass

from webhooks_core.models import Endpoint, EndpointKind

# A broadcast (no application) may be among the messages matched: ``application_id`` is a
# column that can be null, and a null one matches every application's endpoints.
MAY_BROADCAST = "may_broadcast"


def receives(
    *,
    event_type: SQLColumnExpression[Any],
    channels: SQLColumnExpression[Any] | None,
    application_id: SQLColumnExpression[Any] | None,
    application: str = "given",
    endpoint: type[Endpoint] | AliasedClass[Endpoint] = Endpoint,
) -> ColumnElement[bool]:
    """The condition "``endpoint`` receives a message with these terms".

    ``event_type`` is a text expression; ``channels`` a ``text[]`` expression, or None when
    the message is known to name no channels; ``application_id`` the message's application,
    or None for a broadcast.  With ``application=MAY_BROADCAST`` the application is a column
    that is null for broadcasts (a batch mixing both).
    """
    # Constants as SQL text, not parameters: the partial index of all-types endpoints is
    # ``WHERE cardinality(event_types) = 0``, which a generic plan matches only to a constant.
    zero: ColumnElement[int] = literal_column("0")
    no_channel_filter = or_(
        endpoint.channels.is_(None), func.cardinality(endpoint.channels) == zero
    )
    conditions = [
        # Named, so that hand-written statements bind it as ``:subscription``.
        endpoint.kind == bindparam("subscription", EndpointKind.SUBSCRIPTION.value),
        endpoint.enabled,
        endpoint.deleted_at.is_(None),
        or_(
            func.cardinality(endpoint.event_types) == zero,
            # ``@>`` rather than ``= ANY`` so the GIN index on event_types can serve it.
            endpoint.event_types.contains(array([event_type])),
        ),
        no_channel_filter
        if channels is None
        else or_(no_channel_filter, endpoint.channels.overlap(channels)),
    ]
    if application_id is not None:
        matches_application = endpoint.application_id == application_id
        if application == MAY_BROADCAST:
            conditions.append(or_(application_id.is_(None), matches_application))
        else:
            conditions.append(matches_application)
    return and_(*conditions)


def receives_values(
    event_type: str, channels: list[str] | None, application_id: Any
) -> ColumnElement[bool]:
    """:func:`receives` for one message's values (bound parameters)."""
    return receives(
        event_type=cast(event_type, TEXT),
        channels=cast(channels, ARRAY(TEXT)) if channels else None,
        application_id=None if application_id is None else cast(application_id, UUID),
    )


def receives_sql(alias: str = "endpoint") -> str:
    """The rule as SQL text over ``endpoints AS <alias>``, for hand-written statements.

    The message's terms are the named parameters ``:event_type`` (text), ``:channels``
    (``text[]``, null for none) and ``:app_id`` (text holding the application's uuid); the
    endpoint kind is the parameter ``:subscription``.  Used by registration's prepared
    publish statement, whose plan is made once: every term is a parameter, no broadcast.
    """
    endpoint = aliased(Endpoint, name=alias)
    condition = receives(
        event_type=cast(bindparam("event_type"), TEXT),
        channels=cast(bindparam("channels"), ARRAY(TEXT)),
        application_id=cast(bindparam("app_id"), UUID),
        endpoint=endpoint,
    )
    dialect = psycopg2.dialect(paramstyle="named")  # type: ignore[no-untyped-call]
    compiled = condition.compile(dialect=dialect)
    return str(compiled)
