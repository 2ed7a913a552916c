"""The `cohortkv` command line: enrich, sandbox, serve (its flags: the sidecar is
`plugin.serve`), demo, verify."""
