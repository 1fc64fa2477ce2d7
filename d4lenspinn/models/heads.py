"""Classifier heads of the physics-informed models: stacked head channels ``(B, C, n, n)`` -> logits ``(B, K)``.

``build_head("d4_cnn", ...)`` is the D4-invariant escnn CNN (:class:`InvariantHead`; the model is then invariant
when its trunk is equivariant); any other name is a timm architecture (EfficientNetV2 ``tf_efficientnetv2_b0`` by
default) with a zero-initialised classifier, so training starts from uniform predictions (cross-entropy ln K).
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from .d4_cnn import D4CNN

__all__ = ["INVARIANT_HEAD", "InvariantHead", "build_head"]

INVARIANT_HEAD = "d4_cnn"


class InvariantHead(nn.Module):
    """A :class:`~d4lenspinn.models.d4_cnn.D4CNN` (or its export) as a head: stacked maps -> logits tensor."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        return self.network(stacked).logits

    def export(self) -> InvariantHead:
        return InvariantHead(self.network.export())


def build_head(name: str, in_chans: int, num_classes: int, image_size: int, drop_rate: float) -> nn.Module:
    """The head ``name`` for ``in_chans`` stacked channels: :data:`INVARIANT_HEAD` or a timm architecture."""
    if name == INVARIANT_HEAD:
        return InvariantHead(D4CNN(image_size, in_chans=in_chans, num_classes=num_classes))
    head = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate)
    classifier = head.get_classifier()
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    return head
