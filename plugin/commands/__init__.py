"""The `cohortkv` command line: enrich, sandbox, demo, verify (serve lives in `plugin.serve`)."""
