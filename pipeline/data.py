"""``pipeline.data``: the first version's name for ``pipeline.core.data``."""

import sys

from pipeline.core import data as _module
from pipeline.core.data import *  # noqa: F403 (the names, for editors and type checkers)

sys.modules[__name__] = _module  # ``pipeline.data is pipeline.core.data``
