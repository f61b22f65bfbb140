"""The executors the sweeps run on live with the server (server/executors.py), whose analysis
jobs use them too (`Settings.executor`); the command line imports them from here as before."""
from mnemoscope.server.executors import (EXECUTORS, Executor, LocalExecutor, RayExecutor, default_workers,
                                         make_executor)

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "make_executor", "default_workers"]
