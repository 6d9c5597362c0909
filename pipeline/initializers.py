"""``pipeline.initializers``: the first version's name for ``pipeline.core.initializers``."""

import sys

from pipeline.core import initializers as _module
from pipeline.core.initializers import *  # noqa: F403 (the names, for editors and type checkers)

sys.modules[__name__] = _module  # ``pipeline.initializers is pipeline.core.initializers``
