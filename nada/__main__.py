"""`python -m nada ...`: see `nada.cli`."""

import sys

from .cli import main

sys.exit(main())
