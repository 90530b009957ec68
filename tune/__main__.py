"""``python -m tune``: see :mod:`tune.cli`."""
import sys

from .cli import main

sys.exit(main())
