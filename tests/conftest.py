"""Fixtures shared across test files, and the skip of the ``cuda`` tests on machines without CUDA."""

import pytest
import torch

from d4lenspinn.config import load_config
from d4lenspinn.train import train


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``cuda`` when no CUDA device is present (``pytest -m cuda`` selects them on a GPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Run directory of a seconds-long D4LensPINN training (8 simulated images per class, 1 epoch, tiny U-Net);
    trained once per test session and shared by the evaluation and interpretability tests."""
    root = tmp_path_factory.mktemp("tiny_run")
    config = load_config(
        overrides=[
            f"data.root={root / 'data'}",
            "data.n_per_class=8",
            "data.batch_size=6",
            "model.name=d4lenspinn",
            "model.kwargs={widths: [1, 2]}",
            "optim.epochs=1",
            f"out={root / 'run'}",
            "n_bootstrap=20",
        ]
    )
    return train(config)
