"""``pipeline.theory``: the first version's name for ``pipeline.core.theory``."""

import sys

from pipeline.core import theory as _module
from pipeline.core.theory import *  # noqa: F403 (the names, for editors and type checkers)

sys.modules[__name__] = _module  # ``pipeline.theory is pipeline.core.theory``
