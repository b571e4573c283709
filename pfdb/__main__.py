"""``python -m pfdb``: the same as the ``pfdb`` command."""

import sys

from .cli import main

sys.exit(main())
