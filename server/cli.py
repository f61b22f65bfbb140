"""`mnemoscope` command line: one sub-command per module in server/commands/."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under mnemoscope.server.commands, one-line help)
COMMANDS = {
    "demo": ("demo", "start the server with the bundled model zoo and open the dashboard"),
    "serve": ("serve", "start the REST API and dashboard server"),
    "train": ("train", "train a model on a synthetic task, writing a checkpoint series"),
    "import": ("import_", "convert another project's checkpoint into mnemoscope's format"),
    "analyze": ("analyze", "does this checkpoint use its memory? ablations, patching, verdict"),
    "zoo": ("zoo", "rebuild the bundled model zoo from its recipes, or list it"),
}


class CLIError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnemoscope", description="Does this network really use its memory?")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(f"mnemoscope.server.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mnemoscope.server.commands.{module}":
                raise
            continue  # command not built yet
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


if __name__ == "__main__":
    # Run through the package module so commands and this file share one CLIError class.
    from mnemoscope.server.cli import main as package_main

    sys.exit(package_main())
