"""``steelnb.training``, the path the README and the book document:
``from steelnb.training import fit``.

It is ``steelnb.model.training`` itself, the same module object, so that every name, a patch and a
pickle work through either path. The package's own modules import ``steelnb.model.training``
(tests/test_imports.py puts this module at the top, where nothing below may import it).
"""

import sys

from .model import training as _module

sys.modules[__name__] = _module
