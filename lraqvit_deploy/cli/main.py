"""The `deploy` command: one subcommand per module in this package, listed in COMMANDS.

Errors: a `DeployError` (bad input, a missing prerequisite) prints one line `deploy CMD: error: ...`
and exits 1; bad flags do the same. Anything else is a bug: one line "internal error, please
report" (exit 2), with the traceback only under `--debug`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from ..errors import DeployError

COMMANDS = ["eval", "compress", "build", "bench", "profile", "table"]  # modules of lraqvit_deploy.cli: register(sub), run(args)
ISSUES_URL = "https://github.com/lraqvit/lraqvit-deploy/issues"

DESCRIPTION = """\
lraqvit-deploy: compress timm Vision Transformers (low-rank + INT8, LRA-QViT) and ship them to
Android (ExecuTorch/XNNPACK .pte) and Jetson (TensorRT) with honest accuracy and latency numbers.

Start with `deploy eval` (the built-in offline test bed), then `deploy <command> --help`.
Every command is a thin layer over the Python API (`from lraqvit_deploy import compress, build, bench`).
"""


class Parser(argparse.ArgumentParser):
    """argparse, except that a bad flag is one line and exit status 1, like every other user error."""

    def error(self, message: str):  # noqa: D401
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def one_line(message: str) -> str:
    """An error message as one line: a DataLoader worker's re-raised error keeps only the original message
    (torch prefixes it with the worker's traceback), any other line break becomes a space."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and "Traceback" in message:
        import re

        m = re.match(r"^[\w.]+: (.*)$", lines[-1])  # "lraqvit_deploy.files.BadImageError: <the message>"
        return m.group(1) if m else lines[-1]
    return " ".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="deploy", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    for p in sub.choices.values():  # options every subcommand takes
        g = p.add_argument_group("general")
        g.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
        g.add_argument("--threads", type=int, default=None,
                       help="CPU threads (torch; for bench, the runtime's; default: torch's choice, bench 1)")
        g.add_argument("--debug", action="store_true", help="show the traceback of an internal error, and the C++ "
                                                            "runtimes' own log lines (ExecuTorch's [cpuinfo_utils.cpp] "
                                                            "lines on every program load)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from ..options import OptionError
    from .args import flag_error

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = f"deploy {args.command}"
    from ..files import show_native_log

    show_native_log(bool(getattr(args, "debug", False)))  # ExecuTorch's C++ log lines: only with --debug
    try:
        if args.threads is not None:
            if not 1 <= args.threads <= 4096:
                raise DeployError(f"--threads {args.threads}: must be between 1 and 4096.")
            import torch

            torch.set_num_threads(args.threads)
        return int(args.func(args) or 0)
    except OptionError as e:
        print(f"{prog}: error: {one_line(flag_error(e))}", file=sys.stderr)
        return 1
    except DeployError as e:
        print(f"{prog}: error: {one_line(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing half-written was kept.", file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours (or of a library we call): say so, trace only on request
        if args.debug:
            raise
        print(f"{prog}: internal error, please report ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              f"rerun with --debug for the traceback: {ISSUES_URL}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
