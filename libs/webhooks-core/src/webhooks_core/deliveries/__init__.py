"""Deliveries: one message to one endpoint, from due to a terminal state."""
