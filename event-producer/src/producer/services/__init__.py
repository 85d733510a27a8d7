"""The producer's domain: each function owns its transaction and writes its event to the outbox."""
