"""`python -m lila_golf.tools.records {size,record,verify,compare} ...` (the same as `python -m lila_golf ...`)."""
import sys

from . import main

sys.exit(main())
