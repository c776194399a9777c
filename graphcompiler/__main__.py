"""`python -m graphcompiler`: the same command line as `graphcompiler`."""

import sys

from .cli import main

sys.exit(main())
