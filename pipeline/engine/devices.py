"""How JAX is set up to use this host's CPU cores, decided before its backend starts.

On a CPU, one XLA device per core, each running its share of the rows single-threaded, trained
the bench workload 1.6x faster than one device whose matrix multiplies fan out over a shared Eigen
thread pool (8.6 s against 13.9 s for 64 trials, measured side by side on 2 cores), so with
several devices ``--xla_cpu_multi_thread_eigen=false`` (reported to avoid a wedge of that pool on
vmapped graphs in PyAutoLabs/PyAutoFit#1528). It did not avoid the wedge we met: a batched QR
(LAPACK custom call) inside an executable hung XLA's CPU pool with these flags, on one device or
two; the engine now compiles no custom call at all (``initializers.finish_draw``), and a call that
stalls anyway is caught by the engine's watchdog. Accelerators are unaffected: these settings
apply to the CPU backend only.

On a CPU-only install, XLA's backend optimization level is lowered from 3 to 1: compiling a
bench chunk executable took 2.1 s instead of 3.6 s (four runs side by side on 2 cores), and
training with it was as fast (5.9 s against 5.97-6.16 s), so cold sweeps start sooner.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import jax


def use_compilation_cache(folder: str | Path) -> None:
    """JAX's persistent compilation cache in ``folder`` (every executable, however quick: theory's
    quadrature kernels compile in about 0.08 s each, and caching them too took a repeated small
    sweep from 6.4 to 6.0 s of CPU, five pairs side by side on 2 cores; 0.2 s cached none)."""
    jax.config.update("jax_compilation_cache_dir", str(Path(folder).resolve()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def configure_cpu(cpu_devices: int | str) -> int:
    """Split the CPU into ``cpu_devices`` XLA devices (``auto`` = one per core); returns it.

    Must run before JAX starts its backend (the first ``jax.devices()``); a device count the user
    already set in ``XLA_FLAGS`` wins.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        count = int(flags.split("xla_force_host_platform_device_count=")[1].split()[0])
    else:
        count = (os.cpu_count() or 1) if cpu_devices == "auto" else int(cpu_devices)
        try:
            jax.config.update("jax_num_cpu_devices", count)
        except RuntimeError:  # JAX already started in this process (a notebook, a test run):
            count = jax.device_count()  # its devices stay what they are
    if count > 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    lower_cpu_optimization()
    return count


def lower_cpu_optimization() -> None:
    """XLA's CPU backend optimization level 1 on a CPU-only install, unless ``XLA_FLAGS`` sets
    one (see this module's docstring); before JAX starts its backend. The tests call it too: their
    tiny executables compiled in 72.7 s instead of 106.5 s at level 3 (tests/engine/test_train.py
    and test_cnn.py, cold cache, 2 cores) and in 159 s at level 0, whose code runs slowly."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags and not _accelerator_installed():
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=1".strip()


def _accelerator_installed() -> bool:
    """A GPU or TPU plugin is installed: leave its compiler settings alone."""
    plugins = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "libtpu")
    return any(importlib.util.find_spec(p) is not None for p in plugins)


def setup_jax(cfg) -> None:
    """CPU devices and JAX's persistent cache under runs/ (a second sweep compiles ~nothing)."""
    apply_jax_setup(**jax_setup(cfg))


def jax_setup(cfg) -> dict:
    """What ``setup_jax(cfg)`` sets, as plain values (a figures process gets them in its job)."""
    cache = str(cache_dir(cfg)) if cfg.engine.compilation_cache else None
    return {"cpu_devices": cfg.engine.cpu_devices, "jax_cache": cache}


def apply_jax_setup(cpu_devices: int | str, jax_cache: str | None) -> None:
    configure_cpu(cpu_devices)
    if jax_cache:
        use_compilation_cache(jax_cache)


def cache_dir(cfg) -> Path:
    """``engine.cache_dir``; else the folder JAX's own ``JAX_COMPILATION_CACHE_DIR`` names (one
    cache for every study of a machine or a test session); else ``<runs_dir>/jax_cache``."""
    named = cfg.engine.cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return Path(named or Path(cfg.runs_dir) / "jax_cache")
