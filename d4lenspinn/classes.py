"""The class vocabulary: label ``i`` is ``CLASS_NAMES[i]`` everywhere (data, models, metrics, reports)."""

from __future__ import annotations

__all__ = ["CLASS_NAMES", "CLASS_ALIASES", "NO_SUBSTRUCTURE", "SUBHALOS", "VORTEX", "SUBSTRUCTURE_LABELS"]

NO_SUBSTRUCTURE, SUBHALOS, VORTEX = 0, 1, 2
"""No substructure (smooth halo), CDM subhalos, axion vortices."""

CLASS_NAMES: tuple[str, ...] = ("no", "sphere", "vort")
"""Class folder names of Common Test I and our simulator, in label order."""

CLASS_ALIASES: dict[str, int] = {"no": 0, "sphere": 1, "vort": 2, "no_sub": 0, "cdm": 1, "axion": 2}
"""Class folder / HDF5 class name -> label, for both the Common Test I and the Model II/III naming schemes."""

SUBSTRUCTURE_LABELS: tuple[int, ...] = (SUBHALOS, VORTEX)
"""The classes with substructure, each compared with ``NO_SUBSTRUCTURE`` in the interpretability pairs."""
