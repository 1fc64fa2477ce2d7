"""What every model returns: the logits, and the maps a physics-informed model computed on the way."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .maps import FeatureMaps, KappaMaps, LensMaps, SourceMaps

__all__ = ["ModelOutput"]


class ModelOutput(NamedTuple):
    """``logits (B, num_classes)`` and ``maps``: ``None`` for plain classifiers, else the model's typed maps object
    (:class:`~d4lenspinn.models.maps.KappaMaps`, :class:`~d4lenspinn.models.maps.LensMaps`, ... from
    :mod:`d4lenspinn.models.maps`), holding exactly the fields that model computes."""

    logits: torch.Tensor
    maps: KappaMaps | LensMaps | SourceMaps | FeatureMaps | None = None
