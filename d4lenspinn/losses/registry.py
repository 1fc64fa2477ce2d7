"""Loss terms declared by name: what each needs, its default weight and the function that computes it.

    @loss_term("tv", needs=("mass",), weight=0.005)
    def tv(inputs: TermInputs) -> torch.Tensor:
        return total_variation(inputs.mass)

    declared_terms()                  # {"tv": LossTerm(...), ...} in declaration order
    check_weights({"tv": 0.01})       # unknown names raise ValueError listing the declared terms

A term's weight is set in the config by its name (``loss.tv=0.01``, see :class:`~d4lenspinn.config.LossConfig`);
:class:`~d4lenspinn.losses.Objective` computes a term when its weight is nonzero and every input it ``needs`` (an
attribute of :class:`~d4lenspinn.losses.TermInputs`) is there. The built-in terms are declared in
:mod:`d4lenspinn.losses.terms`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import LossConfig
from .inputs import INPUT_NAMES

if TYPE_CHECKING:
    import torch

    from .inputs import TermInputs

__all__ = ["LossTerm", "loss_term", "register_term", "declared_terms", "check_weights"]


@dataclass(frozen=True)
class LossTerm:
    """A loss term: ``compute(inputs)`` is a scalar tensor, applied when the inputs named in ``needs`` exist;
    ``weight`` is its default weight (>= 0; 0: off unless the config sets it). A term that ``needs`` ``"truth"``
    is supervised: it applies to simulations only."""

    name: str
    needs: tuple[str, ...]
    weight: float
    compute: Callable[[TermInputs], torch.Tensor]

    @property
    def supervised(self) -> bool:
        """Whether the term needs the simulator's truth."""
        return "truth" in self.needs


_TERMS: dict[str, LossTerm] = {}


def register_term(term: LossTerm) -> LossTerm:
    """Add ``term`` to the declared terms; its name must be new and not a schedule key, its needs known inputs."""
    if term.name in _TERMS or term.name in LossConfig.schedule_keys():
        raise ValueError(f"loss term {term.name!r} is already declared (or is a loss schedule key)")
    unknown = sorted(set(term.needs) - set(INPUT_NAMES))
    if unknown:
        raise ValueError(f"loss term {term.name!r} needs unknown input(s) {unknown}; inputs: {', '.join(INPUT_NAMES)}")
    _check_weight(term.name, term.weight)
    _TERMS[term.name] = term
    return term


def loss_term(name: str, needs: tuple[str, ...], weight: float = 0.0):
    """Decorator declaring ``compute(inputs) -> scalar tensor`` as the loss term ``name`` (see :class:`LossTerm`)."""

    def declare(compute: Callable[[TermInputs], torch.Tensor]) -> Callable[[TermInputs], torch.Tensor]:
        register_term(LossTerm(name, tuple(needs), weight, compute))
        return compute

    return declare


def declared_terms() -> dict[str, LossTerm]:
    """The declared loss terms by name, in declaration order (the order they are computed and summed in)."""
    return dict(_TERMS)


def check_weights(weights: Mapping[str, float]) -> None:
    """Raise ``ValueError`` for a name in ``weights`` that is no declared term (listing the declared ones) or a
    weight that is not a finite number >= 0."""
    unknown = sorted(set(weights) - set(_TERMS))
    if unknown:
        raise ValueError(
            f"unknown loss term(s) {', '.join('loss.' + name for name in unknown)}; declared terms: "
            f"{', '.join(_TERMS)} (schedule: {', '.join(LossConfig.schedule_keys())})"
        )
    for name, value in weights.items():
        _check_weight(name, value)


def _check_weight(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"loss weight {name} must be a finite number >= 0, got {value!r}")
