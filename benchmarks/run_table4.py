#!/usr/bin/env python
"""Paper Table 4 (and Tables 1, 2, 9) for the test bed: `deploy table` with benchmarks/table4.toml.

    python benchmarks/run_table4.py                     # -> out/table4/table4.md (.csv, .json, .png)
    python benchmarks/run_table4.py --resume            # continue an interrupted run
    python benchmarks/run_table4.py --config my.toml --out results/phone1

Any other `deploy table` option passes through. Uses only the public CLI.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lraqvit_deploy.cli.main import main

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--config" not in argv and "-c" not in argv:
        argv = ["--config", str(HERE / "table4.toml"), *argv]
    if "--threads" not in argv:
        argv = ["--threads", "1", *argv]  # the harness's own work; steps take threads from the config
    sys.exit(main(["table", *argv]))
