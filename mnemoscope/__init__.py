"""mnemoscope: does this network really use its memory?

The code lives in the top-level folders models/, analysis/, server/ and dashboard/,
installed as mnemoscope.models, mnemoscope.analysis, mnemoscope.server and
mnemoscope.dashboard (see pyproject.toml).
"""

__version__ = "0.1.0"
