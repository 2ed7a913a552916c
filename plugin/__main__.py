"""`python -m plugin` is the `cohortkv` command."""

import sys

from plugin.cli import main

sys.exit(main())
