"""``pipeline.export``: the first version's name for ``pipeline.reuse.export``."""

import sys

from pipeline.reuse import export as _module
from pipeline.reuse.export import *  # noqa: F403 (the names, for editors and type checkers)

sys.modules[__name__] = _module  # ``pipeline.export is pipeline.reuse.export``
