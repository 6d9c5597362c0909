"""The compiled calls: group trials by structure, pad, compile, call the core, summarize.

A *trial* is a ``TrialSpec`` (read by dotted key). Each trial becomes ``train.seeds`` rows. Rows
are grouped by structure (activation, depth bucket, width, optimizer); within a group, calls are
sized from ``engine.memory_gb`` and padded to a power of two so that few executables serve every
batch. What triggers a compile: a new structure, a new padded row count, or a change of the static
training settings (batch size, chunk length, thresholds, smoothing, target loss).

Any ``train.steps`` works with any ``train.eval_every_steps``: a trial trains in
ceil(steps / chunk) calls of one chunk executable, and when the chunk does not divide the steps,
the last call's steps past ``train.steps`` are masked inside the scan (``train.chunk_row``: they
change no parameter, optimizer state or metric, and the curves keep ``train.steps`` points).
Measured against the alternative, a second executable for a shorter last chunk, with the default
``python -m pipeline train`` (digits, 3 seeds, 2 CPU cores, no compilation cache) and
train.eval_every_steps=20: train.steps=60 took 7.1-7.4 s; 61 with the mask 7.1-7.3 s (19 masked
steps, +0.06 s of training); 61 with a second executable 9.0-11.0 s (one more chunk compile,
3-5 s of compile time per structure). At model.width=256, model.depth=6 the mask cost +0.8 s of
training, the second executable +5-8 s of compiling. The mask compiles nothing and costs at most
``chunk_steps - 1`` steps per call: it loses only in a sweep of many calls per structure with a
large gap to the next multiple, where a chunk length that divides train.steps is the cure. A
step count the chunk divides compiles no mask and trains bit for bit as before.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from pipeline.config import Space, TrialSpec
from pipeline.core import metrics
from pipeline.core.activations import MERGED
from pipeline.core.data import Dataset, batch_schedule
from pipeline.core.metrics import TrialResult
from pipeline.core.model import BUILTIN_KINDS, Structure, probed_layers
from pipeline.core.net import Layout, Net
from pipeline.core.train import Data, Hparams, Settings, make_train
from pipeline.core.unit_draws import UnitSampler, make_unit_draws
from pipeline.engine.factory import factory_takes, net_for
from pipeline.engine.plan import (
    MERGEABLE_KINDS,
    bucket_depth,
    default_memory_gb,
    depth_buckets,
    merged_activation,
    row_bytes,
    settings_from,
    space_draws,
)
from pipeline.engine.rows import row_hparams, stack_rows
from pipeline.engine.timing import StalledCall, Stopwatch, call_with_deadline

# Watchdog bounds (engine.stall_timeout_s=auto): a call is a stall when it has given no result
# after STALL_FACTOR times the time predicted from the slowest measured call per unit of work,
# and never before STALL_FLOOR_S; before any call was measured, STALL_FIRST_S.
STALL_FACTOR = 20.0
STALL_FLOOR_S = 60.0
STALL_FIRST_S = 300.0


@dataclass
class EngineStats:
    compile_wait_s: float = 0.0  # seconds training waited for an executable
    train_s: float = 0.0
    executables: int = 0
    layer_steps: int = 0  # rows x real layers x steps
    padded_layer_steps: int = 0  # the same, counting masked layers and padding rows


@functools.cache
def batched_train(
    net: Net, settings: Settings, activation_axis: int | None = 0
) -> tuple[Callable, Callable]:
    """The core's per-row functions (``make_train``) over a batch of rows: ``jit(vmap(...))``,
    rows on axis 0, the unit draws and the data shared; the chunk's input state is donated
    (updated in place). Once per process: an engine that trains a structure an earlier engine
    of the process trained (coord-check and transfer build several, the tests many) reuses the
    jitted functions, so their executables are neither traced nor compiled again (``net_for``
    gives one ``Net`` per structure, so the key is stable)."""
    fns = make_train(net, settings)
    # A merged structure's activation index is one per call (``Engine.plan``), not a row axis
    # (``activation_axis=None``), so its ``lax.switch`` stays a branch: only the call's runs.
    hp = Hparams(*[0] * len(Hparams._fields))._replace(activation=activation_axis)
    init = jax.jit(jax.vmap(fns.init, in_axes=(hp, None, None)))
    chunk = jax.jit(jax.vmap(fns.chunk, in_axes=(0, hp, 0, None)), donate_argnums=0)
    return init, chunk


class Call(NamedTuple):
    """One compiled call: trials of one structure, padded to ``n_rows`` rows."""

    structure: Structure
    settings: Settings
    ids: list[int]  # indices into the trial list
    n_rows: int


class Engine:
    """Trains lists of trials on one dataset with fixed training settings.

    Executables are compiled on a thread pool, in the order the calls will run, while earlier
    calls train: XLA compiles outside the GIL, so on a 2-core machine compiling the next groups
    overlaps with training the current one. With several local devices, the row axis of every
    call is sharded over all of them (a 1-D mesh), and data and unit draws are replicated.
    """

    def __init__(self, cfg, dataset: Dataset, space: Space):
        self.cfg = cfg
        self.dataset = dataset
        self.steps = cfg.train.steps
        self.n_seeds = cfg.train.seeds
        self.draws = space_draws(cfg, space)
        schedule = batch_schedule(
            len(dataset.y_train), cfg.train.batch_size, self.steps, self.n_seeds, cfg.train.seed
        )
        self.mesh = jax.make_mesh(
            (jax.device_count(),), ("rows",), axis_types=(jax.sharding.AxisType.Auto,)
        )
        self.rows_sharding = NamedSharding(self.mesh, PartitionSpec("rows"))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        arrays = (*dataset[:4], schedule)
        self.data = Data(*(jax.device_put(jnp.asarray(a), replicated) for a in arrays))
        self.replicated = replicated
        self.key = jax.random.key(cfg.train.seed)
        self.buckets = depth_buckets(cfg, space)
        self.merged_activation = merged_activation(cfg, space)
        self.index_per_call = cfg.engine.merge_activations == "call"
        self.memory_gb = cfg.engine.memory_gb or default_memory_gb()
        self.stats = EngineStats()
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="xla")
        self._executables: dict[tuple, Future] = {}
        self._units: dict[Layout, Future] = {}
        self._unit_values: dict[Layout, dict] = {}
        self._samplers: dict[Layout, UnitSampler] = {}
        self.compile_clock = Stopwatch()  # compile-thread seconds (overlaps with training)
        self._seconds_per_work: float | None = None  # slowest measured call per unit of work

    # --- grouping -----------------------------------------------------------------------------

    def structure_of(self, trial: TrialSpec) -> Structure:
        """A built-in network's depth is padded to its bucket (masked layers); a user's module
        has no mask, so each depth is its own structure."""
        kind, depth = trial["model.kind"], trial["model.depth"]
        activation = trial["model.activation"]
        if self.merged_activation and kind in MERGEABLE_KINDS:
            activation = self.merged_activation  # one executable, each row its own by index
        structure = Structure(
            activation=activation,
            n_hidden=bucket_depth(depth, self.buckets) if kind in BUILTIN_KINDS else depth,
            width=trial["model.width"],
            n_in=self.dataset.n_features,
            n_classes=self.dataset.n_classes,
            kind=kind,
            factory=trial["model.factory"] if kind not in BUILTIN_KINDS else None,
            norm=trial["model.norm"],
            heads=trial["model.heads"] if kind == "transformer" else 1,
            vocab=self.dataset.n_tokens,
        )
        if structure.factory is None:
            return structure
        # A value the factory does not take does not change its module: blank it, so that
        # trials differing only in it share one executable.
        takes = factory_takes(structure.factory)
        blank = {"activation": "", "n_hidden": 0, "width": 0}
        named = {"activation": "activation", "n_hidden": "depth", "width": "width"}
        return structure._replace(**{f: v for f, v in blank.items() if named[f] not in takes})

    def net(self, structure: Structure) -> Net:
        return net_for(structure, self.cfg.engine.unroll)

    def max_rows(self, structure: Structure, settings: Settings) -> int:
        budget = self.memory_gb * 2**30 * jax.device_count()
        need = row_bytes(self.net(structure), structure, settings, len(self.dataset.y_val))
        return max(1, int(budget // need))

    def padded_rows(self, structure: Structure, settings: Settings, n: int) -> int:
        """Rows for a call of ``n`` real rows: an executable already compiled for this structure
        when it wastes at most a third of its rows, else a new size: a power of two times the
        device count for small calls, a multiple of twice the device count above that.

        At least two rows per device: XLA's CPU backend computes a one-row batch by another path
        (unbatched matrix products) whose rounding differs, so a trial trained alone would not
        give the numbers it gives beside other trials. Measured on a trial that explodes at
        initialization (loss 225): its validation loss after 20 Adam steps was 16.492700 in a
        call of 1 row and 16.492842, bit for bit, in calls of 2, 3, 4, 5 and 8 rows."""
        devices = jax.device_count()
        n = max(n, 2 * devices)
        compiled = sorted(
            r for (st, se, r) in self._executables if (st, se) == (structure, settings)
        )
        reusable = [r for r in compiled if n <= r <= 1.5 * n]
        if reusable:
            return reusable[0]
        if n <= 4 * devices:  # small calls: powers of two, few variants
            return devices * (1 << max(0, math.ceil(math.log2(-(-n // devices)))))
        step = 2 * devices
        return -(-n // step) * step

    def plan(self, trials: Sequence[TrialSpec]) -> list[Call]:
        groups: dict[tuple[Structure, str, str], list[int]] = {}
        for i, trial in enumerate(trials):
            structure = self.structure_of(trial)
            # engine.merge_activations=call: one executable, but a call per activation
            merged = self.index_per_call and MERGED in structure.activation
            own = trial["model.activation"] if merged else ""
            groups.setdefault((structure, trial["train.optimizer"], own), []).append(i)
        calls = []
        for (structure, optimizer, _), ids in groups.items():
            settings = settings_from(self.cfg, optimizer, [trials[i] for i in ids])
            per_call = max(1, self.max_rows(structure, settings) // self.n_seeds)
            for start in range(0, len(ids), per_call):
                part = ids[start : start + per_call]
                n_rows = self.padded_rows(structure, settings, len(part) * self.n_seeds)
                calls.append(Call(structure, settings, part, n_rows))
                self._compiled(calls[-1], trials[part[0]])  # queue its compile now, in run order
        return calls

    # --- compiled pieces ------------------------------------------------------------------------

    def _sampler(self, structure: Structure) -> UnitSampler:
        """One unit sampler per parameter layout (the activation does not change it): compiled,
        run and finished from the same object."""
        net = self.net(structure)
        if net.layout not in self._samplers:
            self._samplers[net.layout] = make_unit_draws(net, self.draws)
        return self._samplers[net.layout]

    def _units_for(self, structure: Structure) -> Future:
        """A layout's raw unit-draw function of the key (compiled on the pool, run on the main
        thread: executing from several threads at once has hung XLA's CPU runtime)."""
        layout = self.net(structure).layout
        if layout not in self._units:
            sampler = self._sampler(structure)
            self._units[layout] = self._pool.submit(
                self.compile_clock.timed(lambda: sampler.compile(self.key, self.n_seeds))
            )
        return self._units[layout]

    def _unit_draws(self, structure: Structure) -> dict:
        layout = self.net(structure).layout
        if layout not in self._unit_values:
            raw = self._units_for(structure).result()(self.key)
            units = self._sampler(structure).finish(raw)  # QR on the host, in NumPy
            self._unit_values[layout] = jax.device_put(units, self.replicated)
        return self._unit_values[layout]

    def _row(self, trial: TrialSpec, structure: Structure, seed: int) -> Hparams:
        return row_hparams(trial, self.net(structure).layout, structure, self.draws, seed)

    def _compiled(self, call: Call, template: TrialSpec | None = None) -> Future:
        """The call's executables (queued to compile on first sight; ``template``: a trial of
        it, whose row gives the shapes of ``Hparams``)."""
        key = (call.structure, call.settings, call.n_rows)
        if key not in self._executables:
            self._units_for(call.structure)
            row = self._row(template, call.structure, 0)
            self._executables[key] = self._pool.submit(
                self.compile_clock.timed(lambda: self._compile(call, row))
            )
            self.stats.executables += 1
        return self._executables[key]

    def _compile(self, call: Call, row: Hparams):
        s = call.structure
        axis = None if self.index_per_call else 0
        init_fn, chunk_fn = batched_train(self.net(s), call.settings, axis)
        units = self._sampler(s).shapes(self.n_seeds)
        units = jax.tree.map(lambda a: self._abstract(a, self.replicated), units)
        hp = jax.tree.map(
            lambda a: self._abstract(
                jax.ShapeDtypeStruct((call.n_rows, *np.shape(a)), np.asarray(a).dtype),
                self.rows_sharding,
            ),
            row._replace(activation=None) if self.index_per_call else row,
        )
        if self.index_per_call and row.activation is not None:  # one per call (``batched``)
            index = jax.ShapeDtypeStruct((), jnp.int32)
            hp = hp._replace(activation=self._abstract(index, self.replicated))
        init_c = init_fn.lower(hp, units, self.data).compile()
        state = jax.tree.map(
            lambda a: self._abstract(a, self.rows_sharding),
            jax.eval_shape(init_fn, hp, units, self.data),
        )
        active = self._abstract(jax.ShapeDtypeStruct((call.n_rows,), jnp.bool_), self.rows_sharding)
        chunk_c = chunk_fn.lower(state, hp, active, self.data).compile()
        return init_c, chunk_c

    @staticmethod
    def _abstract(a, sharding) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding)

    # --- running ------------------------------------------------------------------------------

    def run(
        self,
        trials: Sequence[TrialSpec],
        on_chunk: Callable[[list[int], int, list[float]], set[int]] | None = None,
        on_result: Callable[[int, TrialResult], None] | None = None,
    ) -> list[TrialResult]:
        """Train ``trials``; ``on_chunk(ids, step, interim_objectives)`` returns ids to prune
        (``step``: the steps trained so far, train.steps after the last chunk).

        ``on_result(i, result)`` is called as soon as trial ``i`` is done, so the caller can log
        and report it while the next group trains.
        """
        calls = self.plan(trials)
        results: list[TrialResult | None] = [None] * len(trials)
        for call in calls:
            call_results = self._run_call(call, [trials[i] for i in call.ids], on_chunk)
            for i, result in zip(call.ids, call_results):
                results[i] = result
                if on_result is not None:
                    on_result(i, result)
        return results  # type: ignore[return-value]

    def _run_call(self, call: Call, trials, on_chunk) -> list[TrialResult]:
        structure, settings, ids, n_rows = call
        n_real = len(trials) * self.n_seeds
        # A trial's numbers are the same for every seed: resolve its rules once, vary the seed.
        per_trial = [self._row(t, structure, 0) for t in trials]
        rows = [r._replace(seed=np.int32(s)) for r in per_trial for s in range(self.n_seeds)]
        rows += [rows[0]] * (n_rows - n_real)
        hp = stack_rows(rows, self.rows_sharding)
        if self.index_per_call and rows[0].activation is not None:  # the rows share it
            hp = hp._replace(activation=jax.device_put(rows[0].activation, self.replicated))
        active = np.arange(n_rows) < n_real

        t_wait = time.perf_counter()
        units = self._unit_draws(structure)
        init_c, chunk_c = self._compiled(call).result()
        self.stats.compile_wait_s += time.perf_counter() - t_wait
        t0 = time.perf_counter()

        def start():  # rows stay where the chunk executable expects them, whatever init chose
            return jax.block_until_ready(
                jax.device_put(init_c(hp, units, self.data), self.rows_sharding)
            )

        state = self._guarded(start, call, "init", measure=False)
        chunks = []
        for chunk_index in range(-(-self.steps // settings.chunk_steps)):
            rows_active = jax.device_put(active, self.rows_sharding)

            def advance(state=state, rows_active=rows_active):
                state, out = chunk_c(state, hp, rows_active, self.data)
                return state, *jax.device_get((out, metrics.snapshot(state)))

            state, out, snapshot = self._guarded(advance, call, f"chunk {chunk_index + 1}")
            chunks.append(out)
            step = min((chunk_index + 1) * settings.chunk_steps, self.steps)
            if on_chunk is not None:
                interim = metrics.objective(snapshot, self.steps)
                per_trial = [
                    float(np.median(interim[j * self.n_seeds : (j + 1) * self.n_seeds]))
                    for j in range(len(trials))
                ]
                live = [j for j in range(len(trials)) if active[j * self.n_seeds]]
                pruned = on_chunk([ids[j] for j in live], step, [per_trial[j] for j in live])
                for j in live:
                    if ids[j] in pruned:
                        active[j * self.n_seeds : (j + 1) * self.n_seeds] = False
            if not active.any():
                break
        final = jax.device_get(metrics.snapshot(state))
        elapsed = time.perf_counter() - t0
        computed = len(chunks) * settings.chunk_steps  # a last chunk's masked steps included
        self._account(structure, trials, n_rows, min(computed, self.steps), computed, elapsed)
        return [
            metrics.summarize(
                final,
                chunks,
                rows=slice(j * self.n_seeds, (j + 1) * self.n_seeds),
                steps=self.steps,
                depth=probed_layers(trials[j]["model.kind"], trials[j]["model.depth"]),
                pruned=not active[j * self.n_seeds],
            )
            for j in range(len(trials))
        ]

    # --- the watchdog ---------------------------------------------------------------------------

    def _guarded(self, fn: Callable[[], Any], call: Call, what: str, measure: bool = True) -> Any:
        """``fn()`` (a compiled call and the wait for its result) on a daemon thread, waited for
        at most the call's stall bound; past it, ``StalledCall`` names the call and structure.

        The wait for an XLA result cannot be interrupted, so it runs off the main thread, which
        stays free to give up: a wedged runtime then costs a recorded failure, not a hung
        process that holds its lease forever. Only one thread executes at a time, as before.
        """
        limit = self.stall_limit(call)
        t0 = time.perf_counter()
        try:
            result = call_with_deadline(fn, limit)
        except TimeoutError:
            s = call.structure
            raise StalledCall(
                f"compiled call stalled: {what} of structure model.kind={s.kind} "
                f"model.activation={s.activation} depth bucket {s.n_hidden} model.width="
                f"{s.width} ({call.n_rows} rows, train.optimizer={call.settings.optimizer}) gave "
                f"no result in {limit:.0f} s (engine.stall_timeout_s="
                f"{self.cfg.engine.stall_timeout_s})"
            ) from None
        if measure:  # chunks only: an init call is far cheaper than the chunks it bounds
            rate = (time.perf_counter() - t0) / _work(call)
            self._seconds_per_work = max(rate, self._seconds_per_work or 0.0)
        return result

    def stall_limit(self, call: Call) -> float:
        """Seconds a call may take before it counts as stalled (``engine.stall_timeout_s``)."""
        setting = self.cfg.engine.stall_timeout_s
        if setting != "auto":
            return float(setting)
        if self._seconds_per_work is None:
            return STALL_FIRST_S
        return max(STALL_FLOOR_S, STALL_FACTOR * self._seconds_per_work * _work(call))

    def _account(self, structure, trials, n_rows, steps_run, steps_computed, elapsed) -> None:
        st = self.stats
        st.train_s += elapsed
        st.layer_steps += sum(t["model.depth"] + 1 for t in trials) * self.n_seeds * steps_run
        st.padded_layer_steps += n_rows * (structure.n_hidden + 1) * steps_computed


def _work(call: Call) -> float:
    """A chunk call's work in proportion to its time: rows x layers x steps x width^2 (x
    positions). Every chunk computes ``chunk_steps`` steps, a last one with masked steps too."""
    s = call.structure
    positions = s.n_in if s.kind in ("cnn", "transformer") else 1  # pixels, tokens
    steps = call.settings.chunk_steps + 2 * call.settings.diagnostics  # probes: 2 passes
    return call.n_rows * (s.n_hidden + 1) * steps * s.width**2 * positions
