"""Forward hooks that read or replace layer outputs, always removed again (also when the forward pass raises).

    with capture(model, ["unet.blocks.enc1", "head"]) as acts:
        model(images)
    acts["unet.blocks.enc1"]                      # the layer's output, detached (GeometricTensor, tensor, NamedTuple)

    with patch(model, {"unet.blocks.enc1": clean_acts["unet.blocks.enc1"]}):
        patched = model(corrupted_images)         # that layer's output replaced by the given value

Layers are named as in ``model.named_modules()``. Activations keep their type: escnn ``GeometricTensor`` (so their
field type is known), plain tensors, or named tuples of tensors (the lensing engine's output).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from escnn import nn as enn
from torch import nn

__all__ = ["resolve_layers", "default_layers", "forward_order", "eval_mode", "capture", "patch", "map_tensors"]


def resolve_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """``name -> module`` for each name; an unknown name is an error listing a few valid ones."""
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:
        valid = [name for name in modules if name][:40]
        raise ValueError(f"unknown layer name(s) {unknown}; valid names include {valid}")
    return {name: modules[name] for name in names}


def default_layers(model: nn.Module, depth: int = 2) -> list[str]:
    """Named submodules down to ``depth`` levels (``ModuleDict``/``ModuleList`` containers do not count as a level
    and are not listed themselves), in registration order."""
    names = []

    def walk(module: nn.Module, prefix: str, level: int) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.ModuleDict | nn.ModuleList):
                walk(child, full + ".", level)
                continue
            names.append(full)
            if level < depth:
                walk(child, full + ".", level + 1)

    walk(model, "", 1)
    return names


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode; its train/eval mode comes back afterwards, also after an error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def forward_order(model: nn.Module, images: torch.Tensor, layers: Sequence[str]) -> list[str]:
    """The ``layers`` that run on ``images``, in the order their outputs are produced (eval mode, restored)."""
    with eval_mode(model):
        with capture(model, layers) as activations:
            model(images)
    return list(activations)


def map_tensors(value: Any, fn) -> Any:
    """Apply ``fn`` to every tensor inside ``value`` (a tensor, a GeometricTensor, a (named) tuple, a list, None)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, enn.GeometricTensor):
        return enn.GeometricTensor(fn(value.tensor), value.type)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(map_tensors(v, fn) for v in value))
    if isinstance(value, tuple | list):
        return type(value)(map_tensors(v, fn) for v in value)
    return value


def _detached_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().clone()


@contextmanager
def capture(model: nn.Module, layers: Sequence[str], detach: bool = True) -> Iterator[dict[str, Any]]:
    """Record each layer's output of the forward pass run inside the block (a module called twice keeps its first
    output). Outputs are detached copies, safe from later in-place ops (``ReLU(inplace=True)``); ``detach=False``
    keeps them in the autograd graph instead."""
    activations: dict[str, Any] = {}
    handles = []

    def hook(name: str):
        def record(module, inputs, output):
            if name not in activations:
                activations[name] = map_tensors(output, _detached_copy) if detach else output

        return record

    try:
        for name, module in resolve_layers(model, layers).items():
            handles.append(module.register_forward_hook(hook(name)))
        yield activations
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def patch(model: nn.Module, replacements: dict[str, Any]) -> Iterator[None]:
    """Replace the output of each named layer by the given value (same type and shape) during the block; each call
    gets a fresh copy, so in-place ops downstream never alter ``replacements``."""
    handles = []
    try:
        for name, module in resolve_layers(model, list(replacements)).items():
            value = replacements[name]
            handles.append(
                module.register_forward_hook(
                    lambda module, inputs, output, value=value: map_tensors(value, torch.clone)
                )
            )
        yield
    finally:
        for handle in handles:
            handle.remove()
