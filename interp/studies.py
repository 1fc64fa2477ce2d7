"""The names of the interpretability studies, in the order ``d4lenspinn interp`` runs them.

A module of its own so that the command line can offer them (``--studies``) without importing torch.
"""

from __future__ import annotations

__all__ = ["STUDIES"]

STUDIES: tuple[str, ...] = ("equivariance", "patching", "probes", "attribution")
