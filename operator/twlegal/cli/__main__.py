"""`python -m twlegal.cli ...` (the tests run the CLI this way, with the venv's interpreter)."""

import sys

from . import main

sys.exit(main())
