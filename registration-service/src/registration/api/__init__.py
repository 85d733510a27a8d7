"""The HTTP layer: parse and validate, call one domain function, serialize."""
