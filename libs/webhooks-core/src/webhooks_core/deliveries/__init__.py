"""The deliveries aggregate: its state machine and the pure decisions on an attempt's outcome.

:mod:`~webhooks_core.deliveries.states` is the one list of delivery states, the transitions
between them and the SQL fragments built from them; :mod:`~webhooks_core.deliveries.outcomes`
decides, without a database, what one attempt's result makes of its delivery.
"""
