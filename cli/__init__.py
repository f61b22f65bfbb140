"""The `mnemoscope` command line: one sub-command per module in cli/commands/.

It sits beside the server, not inside it: commands may use models, analysis and server
(`demo` and `serve` start the web service), while server/ never imports the command line.
"""
from .errors import CLIError
from .main import build_parser, main

__all__ = ["CLIError", "build_parser", "main"]
