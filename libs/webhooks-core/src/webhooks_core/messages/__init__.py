"""The message aggregate: the envelope producers publish, and accepting it (store once, then
one delivery per matching endpoint).

* :mod:`.envelope`: the event envelope and the body an endpoint receives;
* :mod:`.fanout`: storing a message once and creating its deliveries, for every ingestion path
  (broker, HTTP publish, relay mode, test events).

What is particular to one ingestion path stays with it: the API's catalogue check,
``Idempotency-Key`` claims and one-statement fast publish are in registration-service's
``services/`` (the only service that publishes over HTTP); the broker consumer's parsing is in
webhook-service's ``delivery/ingest.py``.
"""
