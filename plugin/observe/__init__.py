"""Operability: Prometheus metrics, rate-limited and redacted logs, optional OpenTelemetry spans."""
