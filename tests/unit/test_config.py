import pytest
from conftest import run_cli

from pipeline.config import ConfigError, Space, load_config


def test_the_default_study_asks_which_init_per_network_on_one_learning_rate_grid():
    cfg = load_config()
    space = Space.parse(cfg.space).entries
    assert space["model.activation"] == ["relu", "tanh"] and space["model.depth"] == [4, 16]
    assert {"torch_default", "flax_default", "keras_default", "he_normal"} <= set(
        space["init.weights"]
    )
    # Each arm as it is defined: gain 1 for all, each framework default with its own bias.
    assert "init.gain" not in space and cfg.init.gain == 1.0 and cfg.init.bias == "auto"
    # One learning-rate grid shared by every arm: quarter decades over at least 2.5 decades,
    # common seeds; the grid may grow to the limits.
    from pipeline.search.grid import initial_rates

    lr = space["train.learning_rate"]
    assert cfg.study.design == "grid" and lr["log"] is True
    rates = initial_rates(lr["low"], lr["high"], cfg.study.grid_per_decade)
    assert cfg.study.grid_per_decade == 4 and len(rates) >= 11
    assert rates[-1] / rates[0] >= 10**2.5 * 0.99
    assert cfg.train.seeds >= 3
    grid = len(rates) * len(space["init.weights"]) * 4
    assert cfg.study.n_trials >= 2 * grid  # a cap the grid and its extensions stay under
    # A preset replaces the default study whole: none of its settings leak into it.
    assert load_config([], "quick").train.seeds == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["study.design=grid", "space.train.learning_rate=[0.1]"],
            "study.design=grid tunes every arm on one learning-rate grid",
        ),
        (
            ["space.init.gain={low: 0.5, high: 2}"],
            "study.design=grid takes lists, but space.init.gain is a range",
        ),
        (
            ["space.train.learning_rate={low: 0.001, high: 20, log: true}"],
            r"outside study.grid_limits=\[0.0001, 10\]",
        ),
        (
            ["space.train.learning_rate={low: 0.001, high: 1}"],
            "space.train.learning_rate needs log: true",
        ),
        (
            ["study.grid_limits=[1, 0.1]"],
            "study.grid_limits=.* is invalid: expected \\[low, high\\]",
        ),
    ],
)
def test_a_grid_design_needs_one_log_learning_rate_range(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.dpeth=3"], "unknown key 'model.dpeth'.*did you mean model.depth"),
        (
            ["init.weights=he_nromal"],
            "init.weights='he_nromal' is invalid: expected one of .*he_normal",
        ),
        (["init.gain=-1"], r"init.gain=-1 is invalid: expected a number > 0 or auto"),
        (["model.depth=abc"], "model.depth='abc'.*integer from 1 to 1024"),
        (["model.depth=0"], "model.depth=0 is invalid"),
        (["train.batch_size=-4"], "train.batch_size=-4 is invalid"),
        (["space.model.actvation=[relu]"], "did you mean model.activation"),
        (["space.model.depth=[]"], "space.model.depth is an empty list"),
        (
            ["study.design=search", "space.init.gain={low: 2, high: 1}"],
            "low .2. must be a number below high .1.",
        ),
        (
            ["space.init.weights=[he_normal, bogus]"],
            "space.init.weights: 'bogus' is invalid: expected one of",
        ),
        (["study.design=search", "study.sampler=grid"], "study.sampler=grid needs lists"),
        (["study.sampler=annealing"], "study.sampler='annealing' is invalid: expected one of tpe"),
        (["tracking.uri=not a url"], "tracking.uri='not a url' is invalid"),
        (["depth"], "not of the form key=value"),
    ],
)
def test_bad_input_names_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides)


def test_overrides_experiments_and_space_replacement():
    cfg = load_config(["model.depth=30", "init.gain=auto", "space.model.depth=[2, 3]"], "quick")
    assert cfg.model.depth == 30 and cfg.init.gain == "auto"
    space = Space.parse(cfg.space).entries
    assert space["model.depth"] == [2, 3]
    # The preset's space replaced the default one whole: its activations, not all nine.
    assert space["model.activation"] == ["relu", "tanh"]
    with pytest.raises(ConfigError, match="unknown experiment 'quik'.*did you mean quick"):
        load_config([], "quik")


def test_space_override_replaces_a_range_with_a_list():
    cfg = load_config(
        [
            "study.design=search",
            "study.sampler=grid",
            "space.init.gain=[0.5, 1.0]",
            "space.train.learning_rate=[0.05]",
        ]
    )
    assert Space.parse(cfg.space).entries["init.gain"] == [0.5, 1.0]


def test_bad_yaml_file_is_one_line(tmp_path):
    from pipeline.config.load import _read_yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        _read_yaml(bad)


@pytest.mark.slow  # the command as a user runs it: e2e
@pytest.mark.parametrize(
    "args",
    [
        ["sweep", "model.dpeth=3"],
        ["sweep", "init.weights=nope"],
        ["sweep", "init.gain=-2"],
        ["sweep", "--experiment", "nope"],
        ["train", "init.weights=nope", "--json"],
        ["best", "study.name=never_ran"],
    ],
)
def test_cli_bad_input_exits_nonzero_with_one_line_and_writes_nothing(tmp_path, args):
    out = run_cli(tmp_path, *args, check=False)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()
