#!/usr/bin/env python3
"""Thin launcher: `python cli.py ...` is `ssi-deploy ...` without installing the package."""

import sys

from ssi_deploy.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
