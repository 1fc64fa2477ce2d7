"""Fixtures shared across test files."""

import pytest

from d4lenspinn.config import load_config
from d4lenspinn.train import train


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
