"""CUDA graphs (scanner/cuda_graphs.py): same estimates as eager passes, and a safe refusal.

These run only where torch sees a GPU (skipped on the CPU-only CI machine; run on a GPU with
benchmarks/gpu_check.sh).
"""
import gc

import numpy as np
import pytest
import torch

import converters
from scanner.estimation import STATUS_CONVERGED, DifferentiableClassifier
from scanner.lred import estimate_patterns
from scanner.schedules import FixedStep
from tests import synthetic

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SETTINGS = dict(pi=0.9, schedule=FixedStep(0.02), max_iterations=400)


def _problem(module: torch.nn.Module | None = None):
    model = synthetic.linear_classifier(5, backdoor_target=3)
    module = module or converters.to_torch(model, "image", "logits").module
    transform = synthetic.identity_transform()
    classifier = DifferentiableClassifier(module, transform, "logits", torch.device("cuda"))
    x, y = synthetic.clean_images(5, 3)
    return classifier, torch.tensor(x[:, None] / 255.0, dtype=torch.float32), torch.tensor(y)


class _ReadsBack(torch.nn.Module):
    """A model whose forward pass reads a value back to the host (as a data-dependent shape
    would): replaying it as a graph would freeze that value, so it must not be captured."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        scale = float(x.detach().abs().max() > -1.0)   # always 1.0, but read on the host
        return self.inner(x) * scale


# 5: several units (run eagerly) until one job is left, whose 12 rows are one unit of 3 passes
@pytest.mark.parametrize("batch_images", [4096, 5])
def test_graphs_give_the_eager_estimates(batch_images):
    classifier, pixels, labels = _problem()
    notices = []
    graphed = estimate_patterns(classifier, pixels, labels, 5, batch_images=batch_images, cuda_graphs=True,
                                notice=notices.append, **SETTINGS)
    eager = estimate_patterns(classifier, pixels, labels, 5, batch_images=batch_images, cuda_graphs=False,
                              **SETTINGS)
    assert notices == []
    for a, b in zip(graphed, eager):
        assert a.status == b.status == STATUS_CONVERGED
        assert a.iterations == b.iterations
        np.testing.assert_allclose(a.pattern, b.pattern, atol=1e-5)
        np.testing.assert_allclose(a.source_weights, b.source_weights, atol=1e-5)


def test_a_model_that_reads_back_to_the_host_runs_eagerly():
    plain, pixels, labels = _problem()
    classifier, _, _ = _problem(_ReadsBack(plain.module))
    notices = []
    graphed = estimate_patterns(classifier, pixels, labels, 5, batch_images=4096, cuda_graphs=True,
                                notice=notices.append, **SETTINGS)
    eager = estimate_patterns(plain, pixels, labels, 5, batch_images=4096, cuda_graphs=False, **SETTINGS)
    assert len(notices) == 1 and "CUDA graphs off" in notices[0]
    for a, b in zip(graphed, eager):
        assert a.iterations == b.iterations
        np.testing.assert_allclose(a.pattern, b.pattern, atol=1e-5)


def test_graphs_leave_no_memory_allocated_behind():
    # each layout of a scan is captured anew (jobs finish at different iterations): a capture
    # that left its activations allocated would grow the memory with every layout and scan
    classifier, pixels, labels = _problem()

    def allocated_after_scan() -> int:
        estimate_patterns(classifier, pixels, labels, 5, batch_images=4096, cuda_graphs=True, **SETTINGS)
        gc.collect()
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()

    first = allocated_after_scan()
    assert allocated_after_scan() <= first + 4096
    assert allocated_after_scan() <= first + 4096


def test_the_report_says_whether_graphs_ran(tmp_path):
    from scanner.config import ScanConfig
    from scanner.pipeline import scan

    model = synthetic.linear_classifier(5, backdoor_target=3)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    x, y = synthetic.clean_images(5, 4)
    np.savez(tmp_path / "clean.npz", x=x, y=y)
    on = scan(path, tmp_path / "clean.npz", ScanConfig(device="cuda", images_per_class=4)).report
    off = scan(path, tmp_path / "clean.npz", ScanConfig(device="cuda", images_per_class=4, cuda_graphs=False)).report
    assert (on.cuda_graphs, off.cuda_graphs) == ("on", "off")
    assert on.target_class == off.target_class == 3
