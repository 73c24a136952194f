"""Notification delivery: the recorded alerts sent to their targets, grouped per target."""
