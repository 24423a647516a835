"""Shared fixtures: hand-built synthetic classifiers (fast) and the committed sample models."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests import synthetic

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_models"

# Tiny models: more threads than this only add overhead, and CI has 2 cores.
torch.set_num_threads(1)

# Fast but real settings: 4 images per class, smallest step 1e-2 (the default schedule then
# lengthens it up to 2e-2 where the weights hold).
FAST_OPTIONS = ["--images-per-class", "4", "--delta", "0.01", "--quiet"]


@pytest.fixture
def backdoored_case(tmp_path):
    """(model.onnx, clean.npz) of a linear classifier with a planted single-pixel backdoor to class 2."""
    return synthetic.write_case(tmp_path, backdoor_target=2)


@pytest.fixture
def clean_case(tmp_path):
    """(model.onnx, clean.npz) of the same linear classifier without a backdoor."""
    return synthetic.write_case(tmp_path, backdoor_target=None)


@pytest.fixture(scope="session")
def sample_models() -> Path:
    if not (SAMPLES / "fmnist_cnn_backdoored.onnx").is_file():
        pytest.skip("sample models are not built (python sample_models/build_samples.py)")
    return SAMPLES


from tests.html_fixtures import backdoored_html_scan  # noqa: E402, F401  (one --html scan shared by the HTML tests)
