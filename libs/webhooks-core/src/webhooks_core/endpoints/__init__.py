"""The endpoint aggregate: which endpoints receive a message, the breaker, the one disable.

* :mod:`.matching`: the matching rule every fan-out path builds its statement from;
* :mod:`.health`: the breaker and health states (pure, with the same reading in SQL);
* :mod:`.disable`: disabling an endpoint, by the engine (410, auto-disable) or an operator;
* :mod:`.pause`: pausing (deliveries accepted and held) and resuming an endpoint.

The submodules are imported by name (``webhooks_core.endpoints.matching``); this package
imports none of them, so that :mod:`webhooks_core.messages.fanout` and :mod:`.disable` (which stores
the ``endpoint.disabled`` message through fan-out) can import each other's module.
"""
