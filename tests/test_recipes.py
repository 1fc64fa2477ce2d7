"""Recipes as configs: every model of docs/RESULTS.md is a file under configs/recipes/, and a run of
benchmarks/compare.py is exactly the ``d4lenspinn train --config configs/recipes/<name>.yaml --set ...`` it prints."""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import torch

from d4lenspinn.checkpoint import load_trained_model
from d4lenspinn.cli import main
from d4lenspinn.config import load_config
from d4lenspinn.evaluate import evaluate
from d4lenspinn.models import list_models

REPOSITORY = Path(__file__).resolve().parents[1]
RECIPES = REPOSITORY / "configs" / "recipes"

# the lens-model variants of docs/RESULTS.md as they were defined in compare.py: registered model, kwargs, loss
VARIANTS = {
    "d4lenspinn_lens": ("d4lenspinn_lens", "{}", ["loss.macro=1.0"]),
    "d4lenspinn_lens_substructure": ("d4lenspinn_lens", "{}", ["loss.macro=1.0", "loss.substructure=1000.0"]),
    "d4lenspinn_lens_self_supervised": ("d4lenspinn_lens", "{}", ["loss.consistency=1.0"]),
    "d4lenspinn_lens_effnet": ("d4lenspinn_lens", "{head: tf_efficientnetv2_b0}", ["loss.macro=1.0"]),
    "d4lenspinn_lens_pooled": ("d4lenspinn_lens", "{head_pool: 2}", ["loss.macro=1.0"]),
    "d4lenspinn_lens_trunk_pooled": ("d4lenspinn_lens", "{trunk_pool: 2}", ["loss.macro=1.0"]),
    "d4lenspinn_lens_half": ("d4lenspinn_lens", "{trunk_pool: 2, head_pool: 2}", ["loss.macro=1.0"]),
    "d4lenspinn_lens_half_lowmacro": ("d4lenspinn_lens", "{trunk_pool: 2, head_pool: 2}", ["loss.macro=0.01"]),
    "d4lenspinn_lens_effnet_half": (
        "d4lenspinn_lens",
        "{trunk_pool: 2, head: tf_efficientnetv2_b0}",
        ["loss.macro=1.0"],
    ),
    "vanilla_lenspinn_lens": ("vanilla_lenspinn_lens", "{}", ["loss.macro=1.0"]),
    "ablation_no_macro": ("d4lenspinn", "{head: d4_cnn}", []),
    "ablation_unsupervised": ("d4lenspinn_lens", "{}", []),
    "ablation_residual_channels": ("d4lenspinn_lens", "{residual_channels: true}", ["loss.macro=1.0"]),
}


def _compare_script():
    """benchmarks/compare.py as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("compare", REPOSITORY / "benchmarks" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _models_of_the_results() -> set[str]:
    """Every model named by a compare.py command in docs/RESULTS.md (its default list where a command names none)."""
    text = (REPOSITORY / "docs" / "RESULTS.md").read_text()
    names = set(_compare_script().MODELS)
    for listed in re.findall(r"compare\.py --models ((?:[a-z0-9_]+\s+)+)--", text):
        names.update(listed.split())
    return names


def test_every_model_of_the_results_has_a_recipe_that_loads():
    names = _models_of_the_results()
    assert set(VARIANTS) <= names and {"d4_cnn", "resnet18", "d4_cnn_preprocessed"} <= names
    for name in sorted(names):
        config = load_config(RECIPES / f"{name}.yaml")
        assert config.model.name in list_models(), name


@pytest.mark.parametrize("recipe", sorted(VARIANTS))
def test_each_variant_recipe_holds_its_model_settings_and_loss_weights(recipe):
    model, kwargs, loss = VARIANTS[recipe]
    expected = load_config(overrides=[f"model.name={model}", f"model.kwargs={kwargs}", *loss])
    assert load_config(RECIPES / f"{recipe}.yaml") == expected


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_recipe_file_loads_and_names_a_registered_model(path):
    assert load_config(path).model.name in list_models()


@pytest.mark.parametrize("path", sorted((REPOSITORY / "configs").glob("*.yaml")), ids=lambda path: path.stem)
def test_every_config_loads_with_settings_its_model_takes_and_states_its_time(path):
    from d4lenspinn.models.registry import check_model_kwargs

    config = load_config(path)
    check_model_kwargs(config.model.name, config.model.kwargs)
    assert "TIME_" not in path.read_text()  # every time per epoch is filled in, or says it was not measured


def test_an_unknown_recipe_is_a_clear_error():
    with pytest.raises(ValueError, match="no recipe 'nope'.*recipes: \\[.*'d4_cnn'"):
        _compare_script().recipe_path("nope")


@pytest.mark.slow
def test_the_cli_reproduces_a_comparison_run_exactly(tmp_path, monkeypatch):
    compare = _compare_script()
    argv = ["--models", "d4lenspinn_lens", "--lrs", "1e-3", "--n-per-class", "8", "--batch", "6", "--epochs", "1"]
    argv += ["--n-bootstrap", "20", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "compare")]
    args = compare.build_parser().parse_args(argv)
    config = compare.run_config(args, "d4lenspinn_lens", 1e-3)

    monkeypatch.chdir(REPOSITORY)  # the printed command names the recipe relative to the repository
    command = shlex.split(compare.train_command(args, "d4lenspinn_lens", 1e-3))
    assert command[:2] == ["d4lenspinn", "train"]
    assert main(command[1:]) == 0
    cli_run = Path(config.out).rename(tmp_path / "cli_run")
    assert load_config(cli_run / "config.yaml") == config

    compare.train_once(config)
    compare_run = Path(config.out)
    assert (compare_run / "metrics.jsonl").read_text() == (cli_run / "metrics.jsonl").read_text()
    trained = load_trained_model(compare_run / "best.pt").model.state_dict()
    for name, tensor in load_trained_model(cli_run / "best.pt").model.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
    evaluations = [evaluate(run / "best.pt") for run in (cli_run, compare_run)]
    assert evaluations[0].reports == evaluations[1].reports
