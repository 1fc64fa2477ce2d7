import pytest
import torch
from torch import nn

from interp.hooks import capture, default_layers, forward_order, patch, resolve_layers


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Sequential(nn.Linear(4, 2), nn.Identity()))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_capture_records_detached_copies_safe_from_inplace_ops():
    model = _model()
    x = torch.randn(5, 3)
    with capture(model, ["0", "2.0"]) as acts:
        out = model(x)
    expected_linear = model[0](x)
    assert torch.equal(acts["0"], expected_linear)  # not clamped by the in-place ReLU that followed
    assert torch.equal(acts["2.0"], out) and not acts["2.0"].requires_grad
    assert _hook_count(model) == 0


def test_patch_replaces_output_and_keeps_the_replacement_intact():
    model = _model()
    replacement = torch.full((5, 4), -1.0)
    with patch(model, {"0": replacement}):
        out = model(torch.randn(5, 3))
    assert torch.equal(out, model[2](torch.zeros(5, 4)))  # ReLU(-1) = 0
    assert torch.equal(replacement, torch.full((5, 4), -1.0))  # the in-place ReLU acted on a copy
    assert _hook_count(model) == 0


@pytest.mark.parametrize("context", ["capture", "patch"])
def test_hooks_are_removed_when_the_forward_pass_raises(context):
    model = _model()
    block = capture(model, ["0", "2"]) if context == "capture" else patch(model, {"0": torch.zeros(2, 4)})
    with pytest.raises(RuntimeError):
        with block:
            assert _hook_count(model) > 0
            model(torch.randn(2, 7))  # wrong input width
    assert _hook_count(model) == 0


def test_unknown_layer_is_an_error_naming_valid_layers():
    with pytest.raises(ValueError, match=r"unknown layer name\(s\) \['nope'\].*'2.0'"):
        resolve_layers(_model(), ["0", "nope"])
    assert _hook_count(_model()) == 0


def test_default_layers_descend_through_containers():
    model = nn.Module()
    model.blocks = nn.ModuleDict({"a": nn.Sequential(nn.Linear(1, 1)), "b": nn.Linear(1, 1)})
    model.head = nn.Sequential(nn.Linear(1, 1), nn.Sequential(nn.Linear(1, 1)))
    assert default_layers(model, depth=2) == ["blocks.a", "blocks.a.0", "blocks.b", "head", "head.0", "head.1"]
    assert default_layers(model, depth=1) == ["blocks.a", "blocks.b", "head"]


def test_forward_order_follows_execution_not_the_given_order():
    model = _model().train()
    assert forward_order(model, torch.randn(2, 3), ["2", "1", "0", "2.1"]) == ["0", "1", "2.1", "2"]
    assert model.training
