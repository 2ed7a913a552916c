"""Permutive's Direct API: the CCS and Contextual clients, their wire types, the answer, and
the circuit breaker."""
