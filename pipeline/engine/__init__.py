"""The engine: the host side of training, between the search and the pure core.

- ``plan``: static settings, depth buckets, row memory, which unit draws a space needs, the
  refusal of a space that cannot fit;
- ``rows``: a trial's spec as the traced per-row numbers (``Hparams``);
- ``run``: ``Engine``, which groups trials by structure, compiles ``jit(vmap(...))`` of the
  core's per-row functions, shards rows over devices, calls them under a watchdog and
  summarizes;
- ``preflight``: the data, memory and model checks run before anything is written;
- ``devices``: CPU devices and the compilation cache; ``timing``: stopwatches and deadlines.
"""

from pipeline.engine.plan import (
    bucket_depth,
    default_memory_gb,
    depth_buckets,
    draws_for,
    row_bytes,
    settings_from,
)
from pipeline.engine.preflight import check_fits
from pipeline.engine.rows import row_hparams, stack_rows
from pipeline.engine.run import STALL_FACTOR, STALL_FIRST_S, STALL_FLOOR_S, Call, Engine

__all__ = [
    "STALL_FACTOR",
    "STALL_FIRST_S",
    "STALL_FLOOR_S",
    "Call",
    "Engine",
    "bucket_depth",
    "check_fits",
    "default_memory_gb",
    "depth_buckets",
    "draws_for",
    "row_bytes",
    "row_hparams",
    "settings_from",
    "stack_rows",
]
