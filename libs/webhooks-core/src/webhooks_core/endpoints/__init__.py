"""The endpoint aggregate: matching, the breaker, the one disable, sealed credentials.

* :mod:`.matching`: the matching rule every fan-out path builds its statement from;
* :mod:`.health`: the breaker and health states (pure, with the same reading in SQL);
* :mod:`.disable`: disabling an endpoint, by the engine (410, auto-disable) or an operator;
* :mod:`.sealing`: secrets sealed at rest (``seal``/``unseal``, key rotation by ``reseal``);
* :mod:`.credentials`: an endpoint's auth setting and credential headers (sealed, masked).

The submodules are imported by name (``webhooks_core.endpoints.matching``); this package
imports none of them, so that :mod:`webhooks_core.fanout` and :mod:`.disable` (which stores
the ``endpoint.disabled`` message through fan-out) can import each other's module.
"""
