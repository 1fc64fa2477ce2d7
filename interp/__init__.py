"""Interpretability toolkit for d4lenspinn models (docs/interpretability.md).

* :mod:`interp.hooks`: capture or replace layer outputs by module name; hooks are always removed.
* :mod:`interp.fields`: how D4 acts on an output (escnn field types, scalar maps, vector fields, invariants).
* :mod:`interp.equivariance`: relative D4 equivariance error of every layer for all 8 elements.
* :mod:`interp.pairs`, :mod:`interp.patching`: clean/corrupted pairs and activation patching with sanity checks.
* :mod:`interp.probes`: cross-validated linear probes against simulator truth, with shuffled-target controls.
* :mod:`interp.attribution`: Integrated Gradients, Grad-CAM, and whether kappa localises the substructure.
* :mod:`interp.studies`: the studies registered by name, each a function returning a result object that writes
  its JSON, figures and report section (``interp/studies/<name>.py``).
* :mod:`interp.report`: every registered study for one checkpoint (``d4lenspinn interp``).

Submodules are imported explicitly (``from interp.patching import activation_patching``) so that importing one
study does not load the others' dependencies.
"""
