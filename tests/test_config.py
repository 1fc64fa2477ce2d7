"""The loss section of the config: term weights by name beside the schedule, checked against the declared terms."""

import pytest
import yaml

from d4lenspinn import train as train_module
from d4lenspinn.config import LossConfig, config_to_dict, load_config, save_config


def test_loss_weights_and_schedule_are_spelled_flat_and_held_apart(tmp_path):
    config = load_config(overrides=["loss.macro=1.0", "loss.tv=1e-3", "loss.substructure=1000", "loss.lens_epochs=2"])
    assert config.loss == LossConfig({"macro": 1.0, "tv": 0.001, "substructure": 1000.0}, lens_epochs=2)
    assert config_to_dict(config)["loss"] == {"macro": 1.0, "tv": 0.001, "substructure": 1000.0, "lens_epochs": 2}
    path = save_config(config, tmp_path / "config.yaml")
    assert yaml.safe_load(path.read_text())["loss"] == {
        "macro": 1.0,
        "tv": 0.001,
        "substructure": 1000.0,
        "lens_epochs": 2,
    }
    assert load_config(path) == config
    assert LossConfig.schedule_keys() == ("lens_epochs",)
    assert load_config().loss == LossConfig()  # every term at its declared default


def test_bad_loss_values_are_errors_naming_the_key():
    for bad in ("-0.1", ".nan", ".inf"):
        with pytest.raises(ValueError, match="loss weight tv must be a finite number >= 0"):
            load_config(overrides=[f"loss.tv={bad}"])
    with pytest.raises(ValueError, match="config key loss.tv expects float, got True"):
        LossConfig({"tv": True})
    with pytest.raises(ValueError, match="config key loss.lens_epochs expects int"):
        load_config(overrides=["loss.lens_epochs=1.5"])
    with pytest.raises(ValueError, match="loss weights must be a mapping"):
        LossConfig([("tv", 1.0)])
    with pytest.raises(ValueError, match="loss must be a mapping"):
        load_config(overrides=["loss=3"])


def test_a_misspelt_term_fails_before_the_data_is_prepared(tmp_path):
    config = load_config(overrides=["loss.macr=1.0", f"data.root={tmp_path / 'data'}", f"out={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match=r"unknown loss term\(s\) loss.macr; declared terms: tv, l1, .*, macro, "):
        train_module.Trainer(config)
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
