"""``pipeline.study``: the first version's name for ``pipeline.search.study``."""

import sys

from pipeline.search import study as _module
from pipeline.search.study import *  # noqa: F403 (the names, for editors and type checkers)

sys.modules[__name__] = _module  # ``pipeline.study is pipeline.search.study``
