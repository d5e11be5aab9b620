"""`python -m node` runs the `fedrollup` command line."""

import sys

from node.ops.cli import main

if __name__ == "__main__":
    sys.exit(main())
