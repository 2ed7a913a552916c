"""`python -m plugin` is the `cohortkv` command."""

import sys

from plugin.commands.cli import main

sys.exit(main())
