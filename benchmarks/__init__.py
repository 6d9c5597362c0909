"""``make bench``: the sweep command against plain per-trial loops, each timed as a whole process
(``python -m benchmarks.bench``). Not part of the installed package."""
