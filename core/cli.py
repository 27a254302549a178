"""Headless commands: `lienzo inspect …`, `lienzo text …`, `lienzo image …`.

Each feature owns a module with `add_arguments(parser)` and `main(args) -> int`; it is listed in
SUBCOMMANDS and imported only when its command runs or help is asked for, so `lienzo` stays fast.
Machine-readable results go to stdout, progress and messages to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from core.errors import AppError, Cancelled

# name -> (module, one-line help). Modules must not import torch at import time.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("core.inspect.cli", "train and run the visual/tabular QA inspector"),
    "text": ("core.text.cli", "generate, summarise, translate, classify and search text"),
    "image": ("core.image.cli", "generate images with local diffusion models"),
}


def available_subcommands() -> dict[str, tuple[str, str]]:
    """Subcommands whose module exists in this build."""
    found = {}
    for name, (module, help_text) in SUBCOMMANDS.items():
        try:
            present = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its package is not part of this build
            present = False
        if present:
            found[name] = (module, help_text)
    return found


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in available_subcommands().items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)


def run_subcommand(args: argparse.Namespace) -> int:
    """Run the chosen subcommand; an AppError becomes a two-line message on stderr and exit code 2."""
    try:
        return int(args._module.main(args) or 0)
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print("cancelled", file=sys.stderr)
        return 130


def progress_printer(prefix: str = "", logs: bool = True):
    """A JobRunner listener that prints progress lines on stderr (for headless commands), and the
    job's log lines unless `logs` is false."""

    def listener(event):
        if event.type == "progress":
            total = f"/{event.total}" if event.total else ""
            print(f"{prefix}[{event.step}{total}] {event.message}", file=sys.stderr, flush=True)
        elif event.type == "log" and logs:
            print(f"{prefix}{event.message}", file=sys.stderr, flush=True)

    return listener


def run_job(fn, params: dict, *, kind: str, title: str | None = None, project=None, listener=None):
    """Run one job to its end on a JobRunner, progress on stderr; Ctrl+C cancels it.

    Returns the finished JobHandle (`.result`, `.run_id`). A failed job raises its AppError, a
    cancelled one `Cancelled` (which run_subcommand turns into exit code 130)."""
    from core.errors import Cancelled
    from core.jobs import CANCELLED, FAILED, JobRunner

    runner = JobRunner(project=project)
    runner.add_listener(listener or progress_printer(f"{kind}: "))
    handle = runner.submit(fn, params, kind=kind, title=title or kind)
    try:
        while not handle.wait(0.2):  # a timed wait lets Ctrl+C through
            pass
    except KeyboardInterrupt:
        handle.cancel()
        handle.wait()
    finally:
        runner.shutdown(cancel=True)
    if handle.status == FAILED:
        raise handle.error
    if handle.status == CANCELLED:
        raise Cancelled()
    return handle
