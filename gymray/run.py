"""``python -m gymray.run``: the command line (see :mod:`gymray.cli`)."""

import sys

from gymray.cli import main

if __name__ == "__main__":
    sys.exit(main())
