"""``pipeline.model``: the first version's name for ``pipeline.core.model``."""

import sys

from pipeline.core import model as _module
from pipeline.core.model import *  # noqa: F403 (the names, for editors and type checkers)

sys.modules[__name__] = _module  # ``pipeline.model is pipeline.core.model``
