"""`cohortkv serve`: the SSAI sidecar — enriching ad-server proxy, enrich and events API.

`plugin.serve.app.make_app(config)` gives the aiohttp application (the enricher, the ad-server
session and the event queue start and stop with it); `plugin.serve.runner.serve(config)` runs
it with graceful shutdown. This package imports none of its modules: importing one of them
never runs the others first.
"""
