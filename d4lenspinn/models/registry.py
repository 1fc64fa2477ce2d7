"""Model registry: every model is built by name, so experiments swap models without code changes.

    @register_model("resnet18")
    def resnet18(image_size: int, in_chans: int = 1, num_classes: int = 3, **kwargs) -> nn.Module: ...

    model = create_model("resnet18", image_size=64)
    model = create_model("d4lenspinn", image_size=64, pixel_scale=0.101)   # physics models need the pixel scale
    list_models()            # sorted names

Every factory takes ``image_size`` (pixels a side), ``in_chans`` and ``num_classes`` (plus its own options) and returns
an ``nn.Module`` whose ``forward(images (B, in_chans, H, W))`` returns a :class:`~d4lenspinn.models.ModelOutput`.
A factory that works in arcsec declares a ``pixel_scale`` parameter (arcsec per pixel, without a default): it comes
from the data or the checkpoint's model card, never from the image size. :func:`create_model` passes
``pixel_scale`` only to the factories that declare it, so callers can always pass the data's scale.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from collections.abc import Callable

from torch import nn

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "count_parameters",
    "uses_pixel_scale",
    "check_model_kwargs",
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a model factory to the registry under ``name`` (names are unique)."""

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered (by {_REGISTRY[name].__module__})")
        _REGISTRY[name] = factory
        return factory

    return add


def create_model(name: str, pixel_scale: float | None = None, **kwargs) -> nn.Module:
    """Build the registered model ``name``; unknown names raise ``ValueError`` listing the valid ones.

    ``pixel_scale`` [arcsec/pixel] goes to the models that declare it (:func:`uses_pixel_scale`), for which it is
    required; the others ignore it."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    if uses_pixel_scale(name):
        if pixel_scale is None or not pixel_scale > 0:
            raise ValueError(
                f"model {name!r} works in arcsec and needs the pixel scale of its images (pixel_scale, arcsec per "
                f"pixel, > 0), got {pixel_scale!r}; it comes from the data (data.pixel_scale, the simulation preset "
                "or the dataset) or from a checkpoint's model card"
            )
        kwargs["pixel_scale"] = float(pixel_scale)
    return _REGISTRY[name](**kwargs)


def uses_pixel_scale(name: str) -> bool:
    """Whether the factory of model ``name`` takes a ``pixel_scale`` (it computes lensing in arcsec)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return "pixel_scale" in inspect.signature(_REGISTRY[name]).parameters


def check_model_kwargs(name: str, kwargs: dict) -> None:
    """Raise ``ValueError`` listing the valid keys if ``kwargs`` (a config's ``model.kwargs``) holds a key the model
    ``name`` does not take, or one set from the data (``image_size``, ``pixel_scale``, ``num_classes``).

    The valid keys are the factory's named parameters and, for a factory with ``**kwargs``, those of the class it
    returns (its return annotation) that have a default and that the factory does not pass itself."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    factory = _REGISTRY[name]
    params = inspect.signature(factory).parameters.values()
    valid = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    built = typing.get_type_hints(factory).get("return")
    if any(p.kind is p.VAR_KEYWORD for p in params) and inspect.isclass(built):
        init = inspect.signature(built).parameters.values()
        defaults = {p.name for p in init if p.default is not p.empty and p.kind is not p.VAR_KEYWORD}
        valid |= defaults - _passed_by_factory(factory, built)
    valid -= {"image_size", "pixel_scale", "num_classes"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(
            f"model.kwargs: model {name!r} takes no {', '.join(unknown)}; valid keys: {', '.join(sorted(valid))} "
            "(image_size, pixel_scale and num_classes come from the data)"
        )


def _passed_by_factory(factory: Callable[..., nn.Module], built: type) -> set[str]:
    """Parameters of ``built`` that ``factory``'s own calls of it set (positionally or by keyword), from its source."""
    names = list(inspect.signature(built).parameters)
    passed = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(factory)))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == built.__name__:
            passed |= set(names[: len(node.args)]) | {keyword.arg for keyword in node.keywords if keyword.arg}
    return passed


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
