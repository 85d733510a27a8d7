"""The deliveries aggregate: its state machine and the pure decisions about it.

:mod:`~webhooks_core.deliveries.states` is the one list of delivery states, the transitions
between them and the SQL fragments built from them; :mod:`~webhooks_core.deliveries.outcomes`
decides, without a database, what one attempt's result makes of its delivery;
:mod:`~webhooks_core.deliveries.planning` cuts due deliveries into batches for the scheduler.
"""
