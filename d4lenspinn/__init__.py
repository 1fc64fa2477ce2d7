"""d4lenspinn: D4-equivariant physics-informed networks for dark-matter substructure in strong lensing."""

__version__ = "0.1.0"
