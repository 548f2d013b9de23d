"""``steelnb.config``, the path the README and the book document:
``from steelnb.config import TrainConfig``.

It is ``steelnb.data.config`` itself, the same module object, so that every name, a patch and a
pickle work through either path. The package's own modules import ``steelnb.data.config``
(tests/test_imports.py puts this module at the top, where nothing below may import it).
"""

import sys

from .data import config as _module

sys.modules[__name__] = _module
