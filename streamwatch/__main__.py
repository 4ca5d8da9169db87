"""``python -m streamwatch``."""

import sys

from streamwatch.cli import main

sys.exit(main())
