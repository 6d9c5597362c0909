"""Transfer analysis (`python -m pipeline transfer`) on planted studies, no training: the optimal
learning rate per width, the one-grid-step verdict, and Spearman's ρ between proxy and target
rankings, against numbers worked out by hand from the planted losses."""

import json
import math

import optuna
import pytest
from conftest import TINY

from pipeline.cli import main
from pipeline.config import TrialSpec, load_config
from pipeline.reports import transfer
from pipeline.search.study import make_storage

LRS = (0.001, 0.002, 0.004, 0.008)
WIDTHS = (64, 128, 256)


def _plant(study: optuna.Study, rows: list[tuple[dict, float]]) -> optuna.Study:
    """Store each (values, loss) as a sweep stores a finished trial: its spec and metrics."""
    base = TrialSpec.of_config(load_config([*TINY, "model.depth=2"]))
    for values, loss in rows:
        spec = base.with_values(values)
        study.add_trial(
            optuna.trial.create_trial(
                params={},
                distributions={},
                value=1.0,  # the objective (steps to target) plays no part here
                user_attrs={"spec": spec.flat(), "metrics": {"final_train_loss": loss}},
            )
        )
    return study


def _lr_optimum(param: str, width: int) -> float:
    """Planted: μP's best rate stays at 0.004; SP's halves as the width doubles (0.008 at 64)."""
    return 0.004 if param == "mup" else 0.008 * 64 / width


def lr_study(storage=None) -> optuna.Study:
    rows = []
    for param in ("sp", "mup"):
        for width in WIDTHS:
            for lr in LRS:
                loss = 0.1 + (math.log2(lr) - math.log2(_lr_optimum(param, width))) ** 2
                if param == "sp" and width == 256 and lr == 0.008:
                    loss = math.nan  # diverged: must rank last, not break the optimum
                values = {
                    "init.parametrization": param,
                    "model.width": width,
                    "train.learning_rate": lr,
                }
                # two trials per cell (e.g. another key the study varied): their median counts
                rows += [(values, loss), (values, loss + 0.2)]
    return _plant(optuna.create_study(study_name="lr_planted", storage=storage), rows)


def test_optimal_learning_rate_per_width_and_the_one_step_verdict():
    result = transfer.analyse(lr_study())
    assert "init_transfer" not in result  # nothing but size and rate varies
    r = result["lr_transfer"]
    assert r["grid"] == list(LRS)
    assert r["sizes"] == ["w64·d2", "w128·d2", "w256·d2"]
    mup, sp = r["by"]["mup"], r["by"]["sp"]
    assert mup["optimal_lr"] == {"w64·d2": 0.004, "w128·d2": 0.004, "w256·d2": 0.004}
    assert sp["optimal_lr"] == {"w64·d2": 0.008, "w128·d2": 0.004, "w256·d2": 0.002}
    assert mup["shift_steps"] == 0 and mup["transfers"]
    assert sp["shift_steps"] == -2 and sp["max_shift_steps"] == 2 and not sp["transfers"]
    assert sp["optimal_loss"]["w64·d2"] == pytest.approx(0.2)  # median of 0.1 and 0.3
    # at width 256 SP's largest rate diverged: stored as inf, above every finite loss
    assert sp["loss"]["w256·d2"][0.008] == math.inf


def test_one_step_of_the_grid_still_transfers():
    """An optimum that moves by exactly one grid step passes; two steps do not."""
    rows = []
    for width, best in ((64, 0.002), (128, 0.004), (256, 0.004)):
        for lr in LRS:
            values = {"init.parametrization": "mup", "model.width": width,
                      "train.learning_rate": lr}  # fmt: skip
            rows.append((values, 1.0 + abs(math.log2(lr / best))))
    r = transfer.analyse(_plant(optuna.create_study(), rows))["lr_transfer"]["by"]["mup"]
    assert r["shift_steps"] == 1 and r["transfers"]


# Six (initializer, gain) configs; the proxy (width 64, depth 2) ranks them 0..5 by loss.
CONFIGS = [(w, g) for w in ("he_normal", "orthogonal") for g in (0.5, 1.0, 2.0)]
PROXY_LOSS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
# Target ranks per parametrization and size; ρ by hand = 1 - 6 Σd² / (n (n² - 1)), n = 6:
TARGET_RANK = {
    ("mup", (256, 2)): [0, 1, 2, 3, 4, 5],  # Σd² = 0: ρ = 1
    ("mup", (64, 8)): [1, 0, 2, 3, 5, 4],  # Σd² = 4: ρ = 1 - 24/210
    ("sp", (256, 2)): [5, 4, 3, 2, 1, 0],  # reversed: ρ = -1
    ("sp", (64, 8)): [2, 0, 1, 3, 4, 5],  # Σd² = 4 + 1 + 1 = 6: ρ = 1 - 36/210
}


def init_study() -> optuna.Study:
    rows = []
    for param in ("sp", "mup"):
        for size in ((64, 2), (256, 2), (64, 8)):
            ranks = TARGET_RANK.get((param, size), range(6))
            for (weights, gain), rank in zip(CONFIGS, ranks, strict=True):
                values = {
                    "init.parametrization": param,
                    "model.width": size[0],
                    "model.depth": size[1],
                    "init.weights": weights,
                    "init.gain": gain,
                }
                rows.append((values, PROXY_LOSS[rank] * size[0] * size[1] / 128))
    return _plant(optuna.create_study(study_name="init_planted"), rows)


def test_rank_correlation_and_winner_between_proxy_and_larger_sizes():
    result = transfer.analyse(init_study())
    assert "lr_transfer" not in result
    assert result["config_keys"] == ["init.gain", "init.weights"]
    r = result["init_transfer"]
    assert r["proxy"] == "w64·d2"
    mup, sp = r["by"]["mup"], r["by"]["sp"]
    assert set(mup) == {"w256·d2", "w64·d8"}
    assert mup["w256·d2"]["spearman"] == pytest.approx(1.0)
    assert mup["w64·d8"]["spearman"] == pytest.approx(1 - 24 / 210)
    assert sp["w256·d2"]["spearman"] == pytest.approx(-1.0)
    assert sp["w64·d8"]["spearman"] == pytest.approx(1 - 36 / 210)
    # over the proxy's best 3 (configs 0, 1, 2), ranked among themselves: n = 3, n (n² - 1) = 24
    assert mup["w256·d2"]["top_configs"] == 3
    assert mup["w256·d2"]["spearman_top"] == pytest.approx(1.0)
    assert mup["w64·d8"]["spearman_top"] == pytest.approx(1 - 6 * 2 / 24)  # 1,0,2: Σd² = 2
    assert sp["w256·d2"]["spearman_top"] == pytest.approx(-1.0)
    assert sp["w64·d8"]["spearman_top"] == pytest.approx(1 - 6 * 6 / 24)  # 2,0,1: Σd² = 6
    # the proxy's winner is (he_normal, 0.5) = config 0, listed as (gain, weights)
    assert mup["w256·d2"]["proxy_winner"] == [0.5, "he_normal"]
    assert mup["w256·d2"]["winner_stays"] and mup["w256·d2"]["proxy_winner_rank"] == 0
    assert not mup["w64·d8"]["winner_stays"] and mup["w64·d8"]["proxy_winner_rank"] == 1
    assert mup["w64·d8"]["target_winner"] == [1.0, "he_normal"]
    assert sp["w256·d2"]["proxy_winner_rank"] == 5  # reversed: the proxy's best is now worst
    assert sp["w64·d8"]["proxy_winner_rank"] == 2


def test_cli_prints_json_and_writes_the_figure(tmp_path, capsys):
    lr_study(make_storage(str(tmp_path / "optuna.journal")))  # where the command looks
    code = main(["transfer", "--json", "study.name=lr_planted", f"runs_dir={tmp_path}"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lr_transfer"]["by"]["sp"]["shift_steps"] == -2
    assert (tmp_path / "lr_planted" / "transfer.png").stat().st_size > 10_000


def test_a_study_of_one_size_is_refused_in_one_line():
    rows = [({"train.learning_rate": lr}, 1.0) for lr in LRS]
    with pytest.raises(LookupError, match="does not vary model.width or model.depth"):
        transfer.analyse(_plant(optuna.create_study(study_name="one"), rows))
