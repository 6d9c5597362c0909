"""``pipeline.activations``: the first version's name for ``pipeline.core.activations``."""

import sys

from pipeline.core import activations as _module
from pipeline.core.activations import *  # noqa: F403 (the names, for editors and type checkers)

sys.modules[__name__] = _module  # ``pipeline.activations is pipeline.core.activations``
