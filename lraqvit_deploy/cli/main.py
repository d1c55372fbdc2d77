"""The `deploy` command: one subcommand per module in this package, listed in COMMANDS."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from ..errors import DeployError

COMMANDS = ["eval", "compress", "build", "bench", "table"]  # modules of lraqvit_deploy.cli, each with register(subparsers) and run(args)

DESCRIPTION = """\
lraqvit-deploy: compress timm Vision Transformers (low-rank + INT8, LRA-QViT) and ship them to
Android (ExecuTorch/XNNPACK .pte) and Jetson (TensorRT) with honest accuracy and latency numbers.

Start with `deploy eval` (the built-in offline test bed), then `deploy <command> --help`.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploy", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    for p in sub.choices.values():  # options every subcommand takes
        g = p.add_argument_group("general")
        g.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
        g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except DeployError as e:
        print(f"deploy {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"deploy {args.command}: interrupted; nothing half-written was kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
