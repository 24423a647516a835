"""L-RED estimation with and without CUDA graphs, in turn, in one process (needs a GPU).

For each ``--case MODEL DATA`` (default: the backdoored sample CNN and its clean images), runs
estimate_patterns at the scan's defaults four times (eager, graphs, eager, graphs) and prints the
estimation time, the peak CUDA memory, the ten pattern norms and the memory still allocated after
each run.

    python benchmarks/cuda_graph_scans.py [--case MODEL DATA ...]

The script behind docs/benchmarks.md "CUDA graphs" ("Decisions and norms", "Memory"), as run on
one H200 at commit cbdbb85 for the sample CNN and the zoo's resnet-clean-s0 (ZOO: a zoo built by
benchmarks/zoo.py):

    python benchmarks/cuda_graph_scans.py --case sample_models/fmnist_cnn_backdoored.onnx sample_models/clean_images \
        --case ZOO/resnet-clean-s0/model.onnx ZOO/resnet-clean-s0/clean.npz
"""
import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
import scanner.lred as lred  # noqa: E402
from scanner.config import ScanConfig  # noqa: E402
from scanner.prepare import prepare  # noqa: E402
from scanner.schedules import WeightControlledStep  # noqa: E402

MB = 2**20


def setup(path, data):
    """The scan's classifier on the GPU and its N = 8 images per class (scanner/prepare.py)."""
    prepared = prepare(path, data, ScanConfig(device="cuda"))
    return prepared.classifier, torch.as_tensor(prepared.x), torch.as_tensor(prepared.y)


def run(cls, x, y, graphs):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    est = lred.estimate_patterns(cls, x, y, 10, pi=0.9, schedule=WeightControlledStep(1e-3, 2e-2),
                                 max_iterations=20000, batch_images=2048, cuda_graphs=graphs, notice=print)
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.synchronize()
    return (time.perf_counter() - t, torch.cuda.max_memory_allocated() / MB, [e.pattern_norm for e in est],
            [round(torch.cuda.memory_allocated() / MB)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs=2, action="append", metavar=("MODEL", "DATA"),
                        help="an ONNX model and its clean images (repeatable; default: the backdoored sample CNN)")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    cases = args.case or [(str(root / "sample_models/fmnist_cnn_backdoored.onnx"),
                           str(root / "sample_models/clean_images"))]
    for path, data in cases:
        cls, x, y = setup(path, data)
        name = Path(path).parent.name if Path(path).name == "model.onnx" else Path(path).name
        for graphs in [False, True, False, True]:
            s, peak, norms, captures = run(cls, x, y, graphs)
            print(name, "graphs" if graphs else "eager ", f"{s:.2f}s peak {peak:.0f} MB", np.round(norms, 4).tolist())
            print("   allocated after the scan (MB):", captures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
