"""`python -m lmtune`: the same command as `lmtune`."""

import sys

from lmtune.cli import main

sys.exit(main())
