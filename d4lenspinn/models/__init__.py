"""Models: the registry, D4LensPINN and the comparison zoo. Importing this package registers every model."""

from . import baselines, d4_cnn, fitted_lens, lenspinn, physics_informed  # noqa: F401  (importing registers the models)
from .capabilities import ModelCapabilities, capabilities_of
from .fitted_lens import FittedPINN
from .maps import FeatureMaps, FittedLensMaps, KappaMaps, LensMaps, SourceMaps
from .output import ModelOutput
from .physics_informed import D4LensPINN, KappaPINN, MacroPINN
from .registry import count_parameters, create_model, list_models, register_model, uses_pixel_scale

__all__ = [
    "ModelOutput",
    "KappaMaps",
    "LensMaps",
    "FittedLensMaps",
    "SourceMaps",
    "FeatureMaps",
    "ModelCapabilities",
    "capabilities_of",
    "D4LensPINN",
    "KappaPINN",
    "MacroPINN",
    "FittedPINN",
    "create_model",
    "list_models",
    "register_model",
    "count_parameters",
    "uses_pixel_scale",
]
