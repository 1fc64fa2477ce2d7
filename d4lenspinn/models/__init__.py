"""Models: the registry, D4LensPINN and the comparison zoo. Importing this package registers every model."""

from . import baselines, d4_cnn, lenspinn, physics_informed  # noqa: F401  (importing registers the models)
from .output import ModelOutput
from .physics_informed import D4LensPINN
from .registry import count_parameters, create_model, list_models, register_model

__all__ = ["ModelOutput", "D4LensPINN", "create_model", "list_models", "register_model", "count_parameters"]
