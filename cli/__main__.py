"""`python -m mnemoscope.cli ...`: the same as the `mnemoscope` console script."""
import sys

from mnemoscope.cli import main

if __name__ == "__main__":
    sys.exit(main())
