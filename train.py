#!/usr/bin/env python
"""Run the stage pipeline of one run folder (compute node). See README.md."""
import sys

from hypersal.runner.cli import main

if __name__ == "__main__":
    sys.exit(main())
