"""Model registry: every model is built by name, so experiments swap models without code changes.

    @register_model("resnet18")
    def resnet18(image_size: int = 64, in_chans: int = 1, num_classes: int = 3, **kwargs) -> nn.Module: ...

    model = create_model("resnet18", image_size=64)
    list_models()            # sorted names

Every factory takes ``image_size`` (pixels a side), ``in_chans`` and ``num_classes`` (plus its own options) and returns
an ``nn.Module`` whose ``forward(images (B, in_chans, H, W))`` returns a :class:`~d4lenspinn.models.ModelOutput`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "count_parameters"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a model factory to the registry under ``name`` (names are unique)."""

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered (by {_REGISTRY[name].__module__})")
        _REGISTRY[name] = factory
        return factory

    return add


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _REGISTRY[name](**kwargs)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
