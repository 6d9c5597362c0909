"""Figures of a study, saved as PNG under runs/<study>/ and logged to the sweep's parent run.

Every figure is drawn from what the study stores (Optuna's trials, their ``metrics``, ``trace``
and ``theory`` user attributes, the base config), so ``make report`` can redraw them any time.
This module is the entry point: ``sweep_plots`` draws every figure of ``FIGURES``, the LR x arm
heatmap (``heatmap``) and Optuna's own two. The figures live by the question they answer: how
training went (``plots_training``), the signal at init layer by layer (``plots_signal``), theory
against measurement (``plots_theory``), the residual rules (``plots_residual``); the rows they
read in ``trial_rows``, what they share in ``drawing``. Their names are re-exported here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402

from pipeline.reports import heatmap  # noqa: E402
from pipeline.reports.drawing import save_figure  # noqa: E402
from pipeline.reports.plots_residual import residual_rules  # noqa: E402
from pipeline.reports.plots_signal import layer_gradients, layer_variances  # noqa: E402
from pipeline.reports.plots_theory import (  # noqa: E402
    _chi1_points,
    _residual_points,
    attention_scales,
    theory_vs_measurement,
)
from pipeline.reports.plots_training import (  # noqa: E402
    depth_curves,
    depth_gain_heatmaps,
    explosions_vs_gain,
    loss_curves,
)
from pipeline.reports.trial_rows import (  # noqa: E402
    Profile,
    Row,
    layer_profiles,
    network_keys,
    networks,
    prediction,
    study_rows,
    trial_row,
)

__all__ = [
    "FIGURES",
    "Profile",
    "Row",
    "attention_scales",
    "depth_curves",
    "depth_gain_heatmaps",
    "explosions_vs_gain",
    "layer_gradients",
    "layer_profiles",
    "layer_variances",
    "loss_curves",
    "network_keys",
    "networks",
    "prediction",
    "residual_rules",
    "study_rows",
    "sweep_plots",
    "theory_vs_measurement",
    "trial_row",
    # the points theory_vs_measurement draws, which the tests read
    "_chi1_points",
    "_residual_points",
]


def _optuna_figure(draw: Callable, study: optuna.Study, path: Path, **kw) -> Path | None:
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 2 or len(study.directions) > 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib backend is marked experimental
        try:
            ax = draw(study, **kw)
        except (ValueError, RuntimeError, ZeroDivisionError):
            return None  # e.g. importances need at least two distinct values per parameter
    fig = np.ravel(ax)[0].figure
    fig.set_size_inches(9, 5)
    return save_figure(fig, path)


FIGURES: dict[str, Callable[[list[Row], str, Path], Path | None]] = {
    "loss_curves_by_init.png": loss_curves,
    "depth_x_sigma_w2.png": depth_gain_heatmaps,
    "layer_gradients_at_init.png": layer_gradients,
    "layer_variance_at_init.png": layer_variances,
    "steps_vs_depth.png": depth_curves,
    "explosions_vs_gain.png": explosions_vs_gain,
    "theory_vs_measurement.png": theory_vs_measurement,
    "attention_scales.png": attention_scales,
    "residual_rules.png": residual_rules,
}


def sweep_plots(study: optuna.Study, out: Path, answer: dict | None = None) -> list[Path]:
    """Every figure of a study; those without the data they need are skipped, and a figure
    that fails is reported and skipped: a picture is never worth losing a finished study.
    ``answer``: the study's ``recommend.recommendations`` where the caller has it (the LR x arm
    heatmap draws its basins and picks)."""
    from optuna.visualization import matplotlib as ovm

    out.mkdir(parents=True, exist_ok=True)
    rows = study_rows(study)
    made = []
    try:
        made.append(heatmap.lr_heatmap(study, out / "lr_heatmap.png", answer) if rows else None)
    except Exception as e:
        warnings.warn(f"figure lr_heatmap.png skipped: {type(e).__name__}: {e}", stacklevel=2)
        plt.close("all")
    for filename, draw in FIGURES.items():
        try:
            made.append(draw(rows, study.study_name, out / filename) if rows else None)
        except Exception as e:
            warnings.warn(f"figure {filename} skipped: {type(e).__name__}: {e}", stacklevel=2)
            plt.close("all")
    made.append(_optuna_figure(ovm.plot_param_importances, study, out / "param_importances.png"))
    made.append(
        _optuna_figure(ovm.plot_parallel_coordinate, study, out / "parallel_coordinates.png")
    )
    return [p for p in made if p is not None]
