"""The `lienzo` command: no arguments opens the GUI; sub-commands run headless work.

Kept free of Qt and torch imports so `lienzo --version` and headless commands start fast.
"""

from __future__ import annotations

import argparse
import sys

import core
from core import cli

VIEWS = ("editor", "canvas", "inspection")


def build_parser(subcommands: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lienzo",
        description="Lienzo, an offline studio for text, images and visual inspection.",
    )
    parser.add_argument("--version", action="version", version=f"Lienzo {core.__version__}")
    parser.add_argument("--project", metavar="PATH", help="open this project (.lienzo file)")
    parser.add_argument("--screenshot", metavar="FILE",
                        help="open the main window, save a PNG of it to FILE once painted, and exit")
    parser.add_argument("--view", choices=VIEWS, help="the view to show first")
    parser.add_argument("--size", metavar="WxH", default=None,
                        help="window size for --screenshot, e.g. 1280x800")
    if subcommands:
        cli.add_subcommands(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Building every subcommand's parser costs ~30 ms of GUI start-up: skip it unless an argument
    # names a subcommand or asks for help.
    wanted = any(a in cli.SUBCOMMANDS or a in ("-h", "--help") for a in argv)
    parser = build_parser(subcommands=wanted)
    args = parser.parse_args(argv)
    if getattr(args, "command", None):
        return cli.run_subcommand(args)
    from desktop.app import run_gui  # Qt only once the GUI is really wanted

    return run_gui(project=args.project, screenshot=args.screenshot, view=args.view, size=args.size)


if __name__ == "__main__":
    sys.exit(main())
