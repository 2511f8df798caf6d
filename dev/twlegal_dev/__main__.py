"""`python -m twlegal_dev ...`: the same as the `twlegal-dev` command."""

import sys

from .cli import main

sys.exit(main())
