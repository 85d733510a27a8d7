"""The people demo producer: a Flask CRUD app that fires typed events through the outbox."""
