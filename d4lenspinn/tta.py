"""Prediction with D4 test-time augmentation (TTA): the mean softmax over the 8 symmetries of the pixel grid.

``predict(model, images, tta=True)`` averages the class probabilities of the 8 transformed images, so its output is
invariant to any D4 transform of the input. The naive way runs the whole model 8 times. For models whose maps are
exactly equivariant (``capabilities.equivariant_maps``: D4LensPINN's preprocessing, escnn U-Net and lensing physics),
:func:`predict` runs ``forward_features`` once, transforms the stacked head channels 8 ways and runs only
``forward_head`` 8 times; the two agree to float precision (tests/models/test_d4lenspinn.py) and the fast path
costs one backbone pass plus 8 head passes (benchmarks/models.py measures it).

Models whose logits are D4-invariant by construction (``capabilities.invariant``, e.g. ``d4_cnn``) skip the
augmentation: its 8 predictions would be equal, so one pass gives the same answer for an eighth of the cost.

Example::

    network = inference_network(model)                       # plain torch where the model can export itself
    probabilities = predict(network, images, tta=True)      # (B, num_classes), rows sum to 1
    probabilities, labels = collect_predictions(model, loader, device, tta=True)   # numpy, over a DataLoader
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .models.capabilities import capabilities_of
from .symmetry import D4_ELEMENTS, transform_scalar

__all__ = ["predict", "predict_with_maps", "predict_naive_tta", "collect_predictions", "inference_network"]


def inference_network(model: nn.Module) -> nn.Module:
    """The network to predict with: ``model.export()`` where the model has one (its escnn layers replaced by plain
    torch layers; same outputs to float precision, tests/test_evaluate.py), else ``model``; in eval mode either way.
    ``evaluate`` and ``predict`` run it: escnn's type checks and field reshuffles cost time and change nothing."""
    export = getattr(model, "export", None)
    return export() if callable(export) else model.eval()


@torch.no_grad()
def predict_naive_tta(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Mean softmax over the 8 transformed inputs, running the full model 8 times; ``(B, num_classes)``."""
    model.eval()
    probabilities = [model(transform_scalar(images, g)).logits.softmax(dim=-1) for g in D4_ELEMENTS]
    return torch.stack(probabilities).mean(dim=0)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Class probabilities ``(B, num_classes)`` for ``images (B, C, H, W)``, in eval mode.

    With ``tta=True``: the D4-averaged probabilities; one plain pass for an invariant model, the one-pass fast path
    when the model declares equivariant maps (D4LensPINN), :func:`predict_naive_tta` otherwise.
    """
    return predict_with_maps(model, images, tta)[0]


@torch.no_grad()
def predict_with_maps(model: nn.Module, images: torch.Tensor, tta: bool = False) -> tuple[torch.Tensor, object]:
    """:func:`predict` and the maps the model computed on the way (``ModelOutput.maps`` of the untransformed
    images; ``None`` for plain classifiers and for the naive TTA, which runs the whole model 8 times)."""
    model.eval()
    capabilities = capabilities_of(model)
    if not tta or capabilities.invariant:
        output = model(images)
        return output.logits.softmax(dim=-1), output.maps
    if not capabilities.equivariant_maps:
        return predict_naive_tta(model, images), None
    maps = model.forward_features(images)
    channels = model.head_channels(maps)  # (B, C, n, n), every channel a scalar field
    # one head call per element: on CPU, 8 calls of B images are faster than one of 8B (benchmarks/models.py)
    probabilities = [model.forward_head(transform_scalar(channels, g)).softmax(dim=-1) for g in D4_ELEMENTS]
    return torch.stack(probabilities).mean(dim=0), maps  # (B, K)


@torch.no_grad()
def collect_predictions(
    model: nn.Module, loader: DataLoader, device: torch.device, tta: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict` over a loader of :class:`~d4lenspinn.data.Batch` (or ``(images, labels)`` pairs):
    probabilities ``(N, K)`` and labels ``(N,)``, numpy."""
    probabilities, labels = [], []
    for batch in loader:
        images, targets = batch[0], batch[1]
        probabilities.append(predict(model, images.to(device), tta=tta).float().cpu())
        labels.append(torch.as_tensor(targets))
    return torch.cat(probabilities).numpy(), torch.cat(labels).numpy()
