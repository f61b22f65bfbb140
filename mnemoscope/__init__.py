"""mnemoscope: does this network really use its memory?

The code lives in the top-level folders models/, analysis/, server/, dashboard/ and cli/,
installed as mnemoscope.models, mnemoscope.analysis, mnemoscope.server, mnemoscope.dashboard
and mnemoscope.cli (see pyproject.toml).
"""

__version__ = "0.1.0"
