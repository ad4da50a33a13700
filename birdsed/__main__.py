"""``python -m birdsed``."""

import sys

from birdsed.cli import main

sys.exit(main())
