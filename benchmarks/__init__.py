"""`python -m benchmarks`: cohortkv against its baselines on emulated upstreams, one table."""
