"""CUDA memory left allocated by repeated graph captures of one engine pass (needs a GPU).

Captures the sample CNN's forward/backward pass (9 targets x 80 image rows, the shape of one
L-RED iteration) four times, deleting each graph after its first replay, and prints the memory
allocated at the start and after each capture and deletion (MB). VARIANT is one of:

  current   warm-up pass on a side stream (torch's CUDA-graph examples), under the sync debug mode
  nodebug   the same without the sync debug mode
  ownpool   side-stream warm-up, a private memory pool per graph
  nowarmup  no warm-up: what scanner/cuda_graphs.py does (the engine's eager pass precedes it)

    for v in current nowarmup nodebug ownpool; do python benchmarks/cuda_graph_memory.py $v; done

This is the script behind docs/benchmarks.md "CUDA graphs" / "Memory" (one H200, one process per
variant): the three side-stream variants grew by 65 MB per capture, nowarmup stayed at 131 MB.
"""
import gc
import sys
import warnings

import torch

sys.path.insert(0, ".")
from scanner.clipping import clip_pixels  # noqa: E402
from scanner.config import ScanConfig  # noqa: E402
from scanner.prepare import prepare  # noqa: E402

warnings.simplefilter("ignore")
MB = 2**20
variant = sys.argv[1]
prepared = prepare("sample_models/fmnist_cnn_backdoored.onnx", "sample_models/clean_images", ScanConfig(device="cuda"))
x = torch.as_tensor(prepared.pixels[:80]).cuda()
cls = prepared.classifier
rows = torch.arange(720, device="cuda") % 80
job = torch.arange(720, device="cuda") // 80
target = job % 10


def unit_sums(v):
    hits = torch.zeros(9, device="cuda")
    grads = torch.zeros((9,) + x.shape[1:], device="cuda")
    u = v[job].requires_grad_(True)
    with torch.enable_grad():
        scores = cls.scores(clip_pixels(x[rows] + u))
        lp = cls.log_posterior(scores).gather(1, target[:, None]).sum()
        (g,) = torch.autograd.grad(lp, u)
    hits.index_add_(0, job, (scores.detach().argmax(1) == target).float())
    grads.index_add_(0, job, g)
    return hits, grads


def cap(v, pool):
    v_in = v.clone()
    if variant != "nowarmup":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        if variant == "nodebug":
            with torch.cuda.stream(side):
                unit_sums(v_in)
        else:
            torch.cuda.set_sync_debug_mode("error")
            with torch.cuda.stream(side):
                unit_sums(v_in)
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, pool=None if variant == "ownpool" else pool):
        out = unit_sums(v_in)
    return g, v_in, out


v = torch.zeros((9,) + x.shape[1:], device="cuda")
unit_sums(v)
torch.cuda.synchronize()


def a():
    return round(torch.cuda.memory_allocated() / MB)


line = [f"{variant:9s} start {a()}"]
for k in range(4):
    pool = torch.cuda.graph_pool_handle()
    unit_sums(v)
    g, v_in, out = cap(v, pool)
    g.replay()
    torch.cuda.synchronize()
    line.append(f"cap{k} {a()}")
    del g, v_in, out
    gc.collect()
    torch.cuda.synchronize()
    line.append(f"del {a()}")
print(" | ".join(line), "| peak", round(torch.cuda.max_memory_allocated() / MB))
