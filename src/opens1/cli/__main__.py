"""`python -m opens1.cli ...` = `opens1 ...`."""

import sys

from opens1.cli import main

sys.exit(main())
