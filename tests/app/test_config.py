"""Configuration: files, presets, environment overrides, precedence and validation (no Keras)."""

import json
import subprocess
import sys

import pytest

from ridurre.app import config as cfg
from ridurre.app.config import ConfigError, resolve_config


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_and_limits():
    config = resolve_config(environ={})
    assert config["strategy.method"] == "l1"
    assert config.source("strategy.method") == "default"
    ratio, target, step = config.limits()
    assert ratio == cfg.DEFAULT_RATIO and target is None
    # three steps of `step` remove `ratio` of the channels
    assert (1 - step) ** config["strategy.iterations"] == pytest.approx(1 - ratio)


def test_limits_for_a_macs_target_only():
    config = resolve_config(environ={}, cli={"strategy": {"target_macs": 0.5, "iterations": 2}})
    ratio, target, step = config.limits()
    assert ratio is None and target == 0.5
    assert (1 - step) ** 4 == pytest.approx(0.5)  # MACs shrink about quadratically with width


def test_limits_for_a_latency_target():
    config = resolve_config(environ={}, cli={"strategy": {"target_latency": 0.5, "iterations": 2}})
    ratio, target, step = config.limits()
    assert ratio is None and target is None  # no default channel cap under a latency target
    assert (1 - step) ** 4 == pytest.approx(0.5)
    both = resolve_config(environ={}, cli={"strategy": {"target_latency": 0.5, "target_macs": 0.8}})
    assert both.limits()[1] == 0.8 and (1 - both.limits()[2]) ** 6 == pytest.approx(0.5)  # the further one
    with pytest.raises(ConfigError, match="strategy.target_latency"):
        resolve_config(environ={}, cli={"strategy": {"target_latency": 1.5}})


@pytest.mark.parametrize("name,ratio", [("conservative", 0.1), ("aggressive", 0.7)])
def test_presets_ship_as_package_data(name, ratio):
    values = cfg.read_preset(name)
    assert values["strategy"]["ratio"] == ratio
    config = resolve_config(preset=name, environ={})
    assert config["strategy.ratio"] == ratio
    assert config.source("strategy.ratio") == f"preset {name!r}"


def test_unknown_preset():
    with pytest.raises(ConfigError, match="--preset: expected one of conservative, aggressive"):
        cfg.read_preset("reckless")


def test_precedence_file_env_cli(tmp_path):
    path = _write(
        tmp_path, "run.yaml", "strategy:\n  ratio: 0.2\n  seed: 1\n  iterations: 4\nlayers:\n  exclude: [predictions]\n"
    )
    env = {"RIDURRE_STRATEGY_RATIO": "0.25", "RIDURRE_STRATEGY_SEED": "3", "PATH": "/bin"}
    config = resolve_config(
        path,
        preset="aggressive",
        environ=env,
        cli={"strategy": {"ratio": 0.3, "seed": None}},
        cli_flags={"strategy.ratio": "--ratio"},
    )
    assert config["strategy.ratio"] == 0.3  # command line beats environment and file
    assert config.source("strategy.ratio") == "command-line option --ratio"
    assert config["strategy.seed"] == 3  # environment beats file (the CLI did not give it)
    assert config.source("strategy.seed") == "environment variable RIDURRE_STRATEGY_SEED"
    assert config["strategy.iterations"] == 4  # file beats preset
    assert config.source("strategy.iterations") == path
    assert config["strategy.ranking"] == "global"  # the preset beats the defaults
    assert config["layers.exclude"] == ["predictions"]


def test_json_file_and_round_trip(tmp_path):
    path = _write(tmp_path, "run.json", json.dumps({"strategy": {"method": "kmeans", "target_macs": 0.5}}))
    config = resolve_config(path, environ={})
    assert config["strategy.method"] == "kmeans"
    saved = str(tmp_path / "config.json")
    config.save(saved)
    again = resolve_config(saved, environ={})  # the saved config.json is a valid config file
    assert again.to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "text,match",
    [
        ("strategy:\n  ratoi: 0.5\n", r"strategy\.ratoi: unknown key \(did you mean 'ratio'\?\)"),
        ("stratgy:\n  ratio: 0.5\n", r"stratgy: unknown section \(did you mean 'strategy'\?\)"),
        ("strategy:\n  ratio: 1.5\n", r"strategy\.ratio: expected a number in \(0, 1\)"),
        ("strategy:\n  iterations: 0\n", r"strategy\.iterations: expected an integer >= 1"),
        ("strategy:\n  method: magic\n", r"strategy\.method: expected one of 'random', 'kmeans'"),
        ("layers:\n  include: ['conv[']\n", r"layers\.include: expected valid regular expressions"),
        ("validation:\n  verify: maybe\n", r"validation\.verify: expected true, false or 'exact'"),
        ("- just\n- a list\n", r"<top level>: expected a mapping of sections"),
        ("strategy: [\n", r"is not valid YAML at line 2"),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path, text, match):
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError, match=match) as info:
        resolve_config(path, environ={})
    assert "bad.yaml" in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="--config: no such file"):
        resolve_config(str(tmp_path / "nope.yaml"), environ={})


def test_environment_values_are_parsed():
    values = cfg.env_overrides(
        {
            "RIDURRE_VALIDATION_VERIFY": "exact",
            "RIDURRE_VALIDATION_DRY_RUN": "true",
            "RIDURRE_STRATEGY_ROUND_TO": "null",
            "RIDURRE_LAYERS_EXCLUDE": "fc.*,predictions",
            "RIDURRE_LAYERS_INCLUDE": "[conv1, conv2]",
            "RIDURRE_STRATEGY_FINETUNE_EPOCHS": "2",
        }
    )
    assert values["validation"] == {"verify": "exact", "dry_run": True}
    assert values["strategy"] == {"round_to": None, "finetune_epochs": 2}
    assert values["layers"] == {"exclude": ["fc.*", "predictions"], "include": ["conv1", "conv2"]}


@pytest.mark.parametrize(
    "var,value,match",
    [
        (
            "RIDURRE_STRATEGY_RATIO",
            "2",
            r"strategy\.ratio: expected .* \(from environment variable RIDURRE_STRATEGY_RATIO\)",
        ),
        ("RIDURRE_STRATEGY_RATIOS", "0.2", r"strategy\.ratios: unknown key"),
        ("RIDURRE_NOPE_RATIO", "0.2", r"RIDURRE_NOPE_RATIO: unknown section"),
        ("RIDURRE_STRATEGY_ITERATIONS", "two", r"strategy\.iterations: expected an integer"),
    ],
)
def test_bad_environment_variables(var, value, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(environ={var: value})


def test_bad_command_line_value_names_the_option():
    with pytest.raises(ConfigError, match=r"strategy\.target_macs: .* \(from command-line option --target-macs\)"):
        resolve_config(
            environ={}, cli={"strategy": {"target_macs": 1.0}}, cli_flags={"strategy.target_macs": "--target-macs"}
        )


def test_config_module_does_not_import_keras():
    code = (
        "import sys, ridurre.app.config as c; c.resolve_config(preset='aggressive', environ={}); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_report_runtimes_from_a_file_the_environment_or_the_command_line(tmp_path):
    assert resolve_config(environ={})["report.runtimes"] == ["keras", "litert", "onnx"]
    path = tmp_path / "run.yaml"
    path.write_text("report:\n  runtimes: [keras, ONNX]\n")
    assert resolve_config(str(path), environ={})["report.runtimes"] == ["keras", "onnx"]
    assert resolve_config(environ={"RIDURRE_REPORT_RUNTIMES": "litert"})["report.runtimes"] == ["litert"]
    with pytest.raises(ConfigError, match="report.runtimes: expected a list of runtimes among keras, litert"):
        resolve_config(environ={}, cli={"report": {"runtimes": "tensorrt"}})
