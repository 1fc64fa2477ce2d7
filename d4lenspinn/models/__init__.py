"""Models: the registry, D4LensPINN and the comparison zoo. Importing this package registers every model."""

from . import baselines, d4_cnn, lenspinn, physics_informed  # noqa: F401  (importing registers the models)
from .capabilities import ModelCapabilities, capabilities_of
from .maps import FeatureMaps, KappaMaps, LensMaps, SourceMaps
from .output import ModelOutput
from .physics_informed import D4LensPINN, KappaPINN, MacroPINN
from .registry import count_parameters, create_model, list_models, register_model, uses_pixel_scale

__all__ = [
    "ModelOutput",
    "KappaMaps",
    "LensMaps",
    "SourceMaps",
    "FeatureMaps",
    "ModelCapabilities",
    "capabilities_of",
    "D4LensPINN",
    "KappaPINN",
    "MacroPINN",
    "create_model",
    "list_models",
    "register_model",
    "count_parameters",
    "uses_pixel_scale",
]
