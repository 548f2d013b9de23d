"""The base of steelnb's own errors.

Every error steelnb raises for bad input (a file, a config, a plan, a checkpoint) derives from
``SteelnbError`` and names the file and the problem; the command line prints these in one line.
Any other exception is a bug, and keeps its traceback. ``SteelnbError`` is a ``ValueError``, so
code that caught ``ValueError`` before still does.
"""

from __future__ import annotations


class SteelnbError(ValueError):
    """Bad input to steelnb; the message names the file (or the value) and the problem."""
