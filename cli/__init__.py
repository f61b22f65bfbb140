"""The `mnemoscope` command line: `main` and its parser, one sub-command per module in
cli/commands/ (`python -m mnemoscope.cli` runs it too).

It sits beside the server, not inside it: commands may use models, analysis and server
(`demo` and `serve` start the web service), while server/ never imports the command line.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CLIError

# name -> (module under mnemoscope.cli.commands, one-line help)
COMMANDS = {
    "demo": ("demo", "start the server with the bundled model zoo and open the dashboard"),
    "serve": ("serve", "start the REST API and dashboard server"),
    "train": ("train", "train a model on a synthetic task, writing a checkpoint series"),
    "import": ("import_", "convert another project's checkpoint into mnemoscope's format"),
    "analyze": ("analyze", "does this checkpoint use its memory? ablations, patching, verdict"),
    "zoo": ("zoo", "rebuild the bundled model zoo from its recipes, or list it"),
    "sweep": ("sweep", "train and analyse a grid of recipes over seeds: reliance curves over a knob"),
    "controls": ("controls", "build the control suite that calibrates the reliance verdict, or list it"),
}
COMMANDS_PACKAGE = f"{__name__}.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnemoscope", description="Does this network really use its memory?")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"{COMMANDS_PACKAGE}.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CLIError as exc:
        print(f"mnemoscope {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["CLIError", "COMMANDS", "build_parser", "main"]
