"""Adapters to the outside world the product reads and writes: the deposit area (untrusted files),
the measurement of staged dumps, and notification targets (Apprise)."""
