"""Checkpoints: one save path (eval-mode weights, model card), one load path with clear errors, old files read."""

import pytest
import torch

from d4lenspinn import __version__
from d4lenspinn.checkpoint import (
    FORMAT_VERSION,
    ModelCard,
    load_checkpoint,
    load_trained_model,
    save_checkpoint,
)
from d4lenspinn.cli import main
from d4lenspinn.config import config_to_dict, load_config
from d4lenspinn.models import create_model

CARD = ModelCard("d4lenspinn", 32, 0.2, training_data="unit test")


def _config():
    return load_config(overrides=["model.name=d4lenspinn", "model.kwargs={widths: [1, 2]}"])


def _model():
    torch.manual_seed(0)
    return create_model("d4lenspinn", image_size=32, pixel_scale=0.2, widths=(1, 2))


def test_a_model_saved_in_train_mode_after_eval_loads_into_a_fresh_model(tmp_path):
    """escnn drops its cached filters when it leaves eval mode; the checkpoint must not depend on the mode."""
    model = _model()
    model.eval()
    model.train()
    path = save_checkpoint(tmp_path / "m.pt", model, _config(), CARD, metadata={"epoch": 3})
    assert model.training  # the caller's mode is kept
    loaded, config, card = load_trained_model(path)
    assert card == CARD and config.model.kwargs == {"widths": [1, 2]} and not loaded.training
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).logits, model.eval()(images).logits, rtol=0, atol=1e-6)
    assert load_checkpoint(path).metadata == {"epoch": 3}


def test_the_model_card_records_what_the_model_expects(tmp_path):
    checkpoint = load_checkpoint(save_checkpoint(tmp_path / "m.pt", _model(), _config(), CARD))
    assert checkpoint.format_version == FORMAT_VERSION and checkpoint.resume is None
    card = checkpoint.card
    assert (card.image_size, card.pixel_scale, card.class_names) == (32, 0.2, ("no", "sphere", "vort"))
    assert card.normalisation == "min-max per image to [0, 1]" and card.package_version == __version__
    assert '32x32 px at 0.2"/px' in card.describe() and "unit test" in card.describe()


def test_files_that_are_not_checkpoints_give_one_line_errors_naming_the_file(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    good = save_checkpoint(tmp_path / "good.pt", _model(), _config(), CARD)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    newer = tmp_path / "newer.pt"
    payload = torch.load(good, weights_only=True)
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, newer)
    cases = {
        text: "is not a readable d4lenspinn checkpoint",
        truncated: "is not a readable d4lenspinn checkpoint",
        foreign: "is a torch file but not a d4lenspinn checkpoint",
        newer: f"format version {FORMAT_VERSION + 1}, newer than the {FORMAT_VERSION}",
        tmp_path / "missing.pt": "does not exist",
    }
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message) as error:
            load_checkpoint(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_cli_evaluate_on_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x00\x01garbage")
    assert main(["evaluate", "--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path} is not a readable d4lenspinn checkpoint" in err and "Traceback" not in err


def test_a_checkpoint_from_before_versioning_is_refused_naming_its_version(tmp_path):
    model = create_model("d4lenspinn", image_size=64, pixel_scale=0.101, widths=(1, 2))
    torch.save(
        {"model": model.state_dict(), "config": config_to_dict(_config()), "image_size": 64}, tmp_path / "old.pt"
    )
    with pytest.raises(ValueError, match=r"old.pt has checkpoint format version 0 .* reads format 1 only"):
        load_checkpoint(tmp_path / "old.pt")


def test_a_config_key_this_version_does_not_know_is_an_error_naming_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _model(), _config(), CARD)
    raw = torch.load(path, weights_only=True)
    raw["config"]["optim"]["physics_start_epoch"] = 2  # a key no version of OptimConfig knows
    torch.save(raw, path)
    with pytest.raises(ValueError, match=r"m.pt: its config .*unknown config key\(s\) optim.physics_start_epoch"):
        load_checkpoint(path)


def test_a_lens_model_saved_before_the_shared_trunk_loads_as_it_was_trained(tmp_path):
    torch.manual_seed(0)
    old = create_model("d4lenspinn_lens", image_size=32, pixel_scale=0.2, widths=(1, 2), shared_trunk=False)
    config = load_config(overrides=["model.name=d4lenspinn_lens", "model.kwargs={widths: [1, 2]}"])  # as then
    path = save_checkpoint(tmp_path / "old.pt", old, config, ModelCard("d4lenspinn_lens", 32, 0.2))
    loaded = load_trained_model(path).model
    assert not loaded.shared_trunk and hasattr(loaded, "macro_estimator")
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).logits, old.eval()(images).logits, rtol=0, atol=1e-6)
    fresh = create_model("d4lenspinn_lens", image_size=32, pixel_scale=0.2, widths=(1, 2))
    new_path = save_checkpoint(tmp_path / "new.pt", fresh, config, ModelCard("d4lenspinn_lens", 32, 0.2))
    assert load_trained_model(new_path).model.shared_trunk
