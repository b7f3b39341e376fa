"""``python -m ferd.cli``: the ``ferd`` command."""

import sys

from . import main

sys.exit(main())
