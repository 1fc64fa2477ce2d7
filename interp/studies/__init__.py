"""Interpretability studies, registered by name; ``d4lenspinn interp`` runs them in registration order.

    names = study_names()                       # ("equivariance", "patching", "probes", "attribution", ...)
    result = get_study("probes")(context)        # a StudyContext (interp.studies.context) -> a StudyResult
    result.to_json(); result.figures(out / "figures"); result.markdown()

A study is a function ``StudyContext -> StudyResult``; its result object knows how to write itself. The built-in
studies are named here with the module and function that implement them, imported only when they run, so this
module (and ``d4lenspinn --help``, which offers the names) loads no torch. Adding a study: one module in
``interp/studies/`` (a result dataclass and the study function) and one line in ``_REGISTRY`` below; a study
defined elsewhere (a notebook, a test) registers itself with ``@register_study("name")``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .context import StudyContext

__all__ = ["StudyResult", "Study", "register_study", "get_study", "study_names"]


class StudyResult(Protocol):
    """What a study returns: it writes ``<name>.json``, its figures and its section of ``report.md``."""

    def to_json(self) -> Any:
        """The study's numbers as JSON-serialisable lists and dicts (written to ``<name>.json``)."""

    def figures(self, out_dir: Path) -> list[Path]:
        """Draw the study's figures into ``out_dir`` (the report's ``figures/`` folder); return their paths."""

    def markdown(self) -> str:
        """The study's section of ``report.md`` (no trailing newline); figures linked as ``figures/<file>``."""


Study = Callable[["StudyContext"], StudyResult]

_REGISTRY: dict[str, Study | str] = {  # a name -> its function, or "module:function" imported when it first runs
    "equivariance": "interp.studies.equivariance:equivariance_study",
    "patching": "interp.studies.patching:patching_study",
    "probes": "interp.studies.probes:probes_study",
    "attribution": "interp.studies.attribution:attribution_study",
}


def register_study(name: str) -> Callable[[Study], Study]:
    """Decorator adding a study function to the registry under ``name`` (names are unique); it runs after the
    studies registered before it."""

    def add(study: Study) -> Study:
        if name in _REGISTRY:
            raise ValueError(f"study {name!r} is already registered")
        _REGISTRY[name] = study
        return study

    return add


def get_study(name: str) -> Study:
    """The study function registered as ``name``; unknown names raise ``ValueError`` listing the registered ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown study {name!r}; registered studies: {', '.join(study_names())}")
    study = _REGISTRY[name]
    if isinstance(study, str):
        module, function = study.split(":")
        study = _REGISTRY[name] = getattr(importlib.import_module(module), function)
    return study


def study_names() -> tuple[str, ...]:
    """Names of all registered studies, in the order ``d4lenspinn interp`` runs them."""
    return tuple(_REGISTRY)
