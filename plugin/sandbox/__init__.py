"""A local stand-in for the CCS and Contextual APIs: no API key, no network, real cohorts.

`start_sandbox()` runs it on loopback for tests, benchmarks and the demo; `make_app()` gives the
aiohttp application; `cohortkv sandbox` runs `serve_forever()`. The workspace (event schemas,
custom and contextual cohorts) is a TOML file: see README.md beside this module.
"""

from __future__ import annotations

from plugin.sandbox.server import (
    SANDBOX_API_KEY,
    Sandbox,
    SandboxState,
    make_app,
    serve_forever,
    start_sandbox,
)
from plugin.sandbox.workspace import (
    Workspace,
    WorkspaceError,
    default_workspace,
    load_workspace,
    parse_workspace,
)

__all__ = [
    "SANDBOX_API_KEY",
    "Sandbox",
    "SandboxState",
    "Workspace",
    "WorkspaceError",
    "default_workspace",
    "load_workspace",
    "make_app",
    "parse_workspace",
    "serve_forever",
    "start_sandbox",
]
