"""The fleet for the monitoring stack people already run: Prometheus metrics and status badges."""
