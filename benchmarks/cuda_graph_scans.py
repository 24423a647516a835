"""L-RED estimation with and without CUDA graphs, in turn, in one process (needs a GPU).

For the backdoored sample CNN and the zoo's resnet-clean-s0 (path relative to the repository
root: .devzoo/, a copy of a zoo built by benchmarks/zoo.py), runs estimate_patterns at the
scan's defaults four times (eager, graphs, eager, graphs) and prints the estimation time, the
peak CUDA memory, the ten pattern norms and the memory still allocated after each run.

    python benchmarks/cuda_graph_scans.py

The script behind docs/benchmarks.md "CUDA graphs" ("Decisions and norms", "Memory"), as run on
one H200 at commit cbdbb85.
"""
import gc
import sys
import time

import numpy as np
import torch

sys.path.insert(0, ".")
import scanner.lred as lred  # noqa: E402
from scanner.config import ScanConfig  # noqa: E402
from scanner.prepare import prepare  # noqa: E402

MB = 2**20


def setup(path, data):
    """The scan's classifier on the GPU and its N = 8 images per class (scanner/prepare.py)."""
    prepared = prepare(path, data, ScanConfig(device="cuda"))
    return prepared.classifier, torch.as_tensor(prepared.x), torch.as_tensor(prepared.y)


def run(cls, x, y, graphs):
    torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    est = lred.estimate_patterns(cls, x, y, 10, pi=0.9, delta=1e-3, max_iterations=20000, batch_images=2048,
                                 adaptive_step=2e-2, cuda_graphs=graphs, notice=print)
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.synchronize()
    return time.perf_counter() - t, torch.cuda.max_memory_allocated() / MB, [e.pattern_norm for e in est], [round(torch.cuda.memory_allocated() / MB)]


for path, data in [("sample_models/fmnist_cnn_backdoored.onnx", "sample_models/clean_images"),
                   (".devzoo/resnet-clean-s0/model.onnx", ".devzoo/resnet-clean-s0/clean.npz")]:
    cls, x, y = setup(path, data)
    for graphs in [False, True, False, True]:
        s, peak, norms, captures = run(cls, x, y, graphs)
        print(path.split("/")[-2 if "devzoo" in path else -1], "graphs" if graphs else "eager ",
              f"{s:.2f}s peak {peak:.0f} MB", np.round(norms, 4).tolist())
        print("   allocated after the scan (MB):", captures)
