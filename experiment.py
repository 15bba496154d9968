#!/usr/bin/env python
"""Plan, write and submit a sweep of hypersal runs (login node). See README.md."""
import sys

from hypersal.experiment.cli import main

if __name__ == "__main__":
    sys.exit(main())
