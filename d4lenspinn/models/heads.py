"""Classifier heads of the physics-informed models: stacked head channels ``(B, C, n, n)`` -> logits ``(B, K)``.

``build_head("d4_cnn", ...)`` is the D4-invariant escnn CNN (:class:`InvariantHead`; the model is then invariant
when its trunk is equivariant), optionally on ``pool x pool`` block averages of the channels; any other name is a
timm architecture (EfficientNetV2 ``tf_efficientnetv2_b0`` by default) with a zero-initialised classifier, so
training starts from uniform predictions (cross-entropy ln K).
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .d4_cnn import D4CNN
from .unet import check_pool

__all__ = ["INVARIANT_HEAD", "InvariantHead", "build_head"]

INVARIANT_HEAD = "d4_cnn"


class InvariantHead(nn.Module):
    """A :class:`~d4lenspinn.models.d4_cnn.D4CNN` (or its export) as a head: stacked maps ``(B, C, n, n)`` -> logits
    ``(B, K)``. With ``pool > 1`` it first averages ``pool x pool`` blocks, which commutes with D4 when ``pool``
    divides ``n`` (the blocks tile the grid symmetrically) and leaves the network ``1 / pool**2`` of the pixels."""

    def __init__(self, network: nn.Module, pool: int = 1) -> None:
        super().__init__()
        self.network, self.pool = network, pool

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            stacked = F.avg_pool2d(stacked, self.pool)
        return self.network(stacked).logits

    def export(self) -> InvariantHead:
        return InvariantHead(self.network.export(), self.pool)


def build_head(
    name: str, in_chans: int, num_classes: int, image_size: int, drop_rate: float, pool: int = 1
) -> nn.Module:
    """The head ``name`` for ``in_chans`` stacked channels: :data:`INVARIANT_HEAD` (on ``pool x pool`` block
    averages when ``pool > 1``) or a timm architecture (``pool`` 1: timm networks downsample on their own)."""
    check_pool(pool, image_size, "head_pool")
    if pool > 1 and name != INVARIANT_HEAD:
        raise ValueError(f"head_pool={pool} applies to the invariant head ({INVARIANT_HEAD!r}), not to {name!r}")
    if name == INVARIANT_HEAD:
        network = D4CNN(image_size // pool, in_chans=in_chans, num_classes=num_classes)
        return InvariantHead(network, pool)
    head = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate)
    classifier = head.get_classifier()
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    return head
