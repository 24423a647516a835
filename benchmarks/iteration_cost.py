"""Per-iteration cost of the batched L-RED engine against one raw forward+backward.

Prints a Markdown table: for each model, the time of one engine iteration with every target
active (all K(K-1)N image rows in the batch) next to one plain forward+backward of the same
rows through the converted torch module, and their ratio (issue target: <= 1.25). On a GPU
the engine is timed twice: plain eager passes, and passes replayed as CUDA graphs (the default);
the last column, the raw pass itself replayed as a CUDA graph, is the floor for both.

    python benchmarks/iteration_cost.py [MODEL.onnx ...] [--data DIR] [--n 8] [--iterations 20]
        [--default-order] [--default-schedule]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from scanner.clipping import clip_pixels
from scanner.config import ScanConfig
from scanner.estimation import select_device
from scanner.lred import estimate_patterns
from scanner.prepare import prepare
from scanner.schedules import FixedStep

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = [ROOT / "sample_models" / "fmnist_cnn_backdoored.onnx"]


def prepare_inputs(model_path: Path, data: Path, n: int, device: torch.device, seed: int = 0,
                   channels_last: bool = True):
    """The scan's inputs, prepared as ``lred scan`` prepares them (scanner.prepare.prepare: N
    correctly classified images per class chosen with ``seed``, the scan's score kind and parity
    gate): (classifier, x, y, num_classes). ``channels_last=False`` keeps the default memory order."""
    prepared = prepare(model_path, data, ScanConfig(images_per_class=n, seed=seed, device=device.type),
                       channels_last=channels_last)
    return prepared.classifier, torch.as_tensor(prepared.x), torch.as_tensor(prepared.y), prepared.num_classes


def iteration_rows(x: torch.Tensor, y: torch.Tensor, num_classes: int, device: torch.device):
    """The image rows of one L-RED iteration with every target active (each target t with the
    images of every other class) and the target of each row, on ``device``."""
    rows = torch.cat([torch.nonzero(y != t).flatten() for t in range(num_classes)])
    target_of_row = y.new_tensor(np.repeat(np.arange(num_classes), [int((y != t).sum()) for t in
                                                                    range(num_classes)]))
    return x[rows].to(device), target_of_row.to(device)


def raw_pass(scores_of, log_posterior, x_rows: torch.Tensor, target_of_row: torch.Tensor):
    """One plain forward+backward of log p(t | [x + u]) through ``scores_of``, as a function;
    ``log_posterior`` turns the scores into log p (the classifier's: log-softmax of logits, or log
    of probabilities)."""
    def step() -> None:
        u = torch.zeros_like(x_rows, requires_grad=True)
        scores = scores_of(clip_pixels(x_rows + u))
        log_p = log_posterior(scores).gather(1, target_of_row[:, None]).sum()
        torch.autograd.grad(log_p, u)
    return step


def measure(model_path: Path, data: Path, n: int, iterations: int, device: torch.device,
            channels_last: bool = True, default_schedule: bool = False) -> dict:
    classifier, x, y, num_classes = prepare_inputs(model_path, data, n, device, channels_last=channels_last)
    x_rows, target_of_row = iteration_rows(x, y, num_classes, device)
    raw_step = raw_pass(classifier.scores, classifier.log_posterior, x_rows, target_of_row)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    raw_step()
    synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        raw_step()
    synchronize()
    raw = (time.perf_counter() - start) / iterations
    notices: list[str] = []
    raw_graphed = None
    if device.type == "cuda":          # the floor: the same raw pass replayed as a CUDA graph
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                raw_step()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                raw_step()
            graph.replay()
            synchronize()
            start = time.perf_counter()
            for _ in range(iterations):
                graph.replay()
            synchronize()
            raw_graphed = (time.perf_counter() - start) / iterations
        except RuntimeError as exc:
            notices.append(f"the raw pass could not be captured: {str(exc).splitlines()[0]}")
    # pi close to 1 keeps every target active for all iterations; the first of the
    # iterations + 1 forward/backward passes has no stopping check
    # --default-schedule: the scan's weight-controlled steps (delta to largest_step) with its
    # repeated updates of w (weight_update_length), the most bookkeeping an iteration does
    config = ScanConfig()
    schedule = config.schedule if default_schedule else FixedStep(1e-4)
    engine = {}
    for graphs in ([False, True] if device.type == "cuda" else [False]):
        start = time.perf_counter()
        estimate_patterns(classifier, x, y, num_classes, pi=0.99999, max_iterations=iterations,
                          batch_images=config.batch_images, cuda_graphs=graphs, notice=notices.append,
                          schedule=schedule)
        synchronize()
        engine[graphs] = (time.perf_counter() - start) / (iterations + 1)
    name = model_path.parent.name if model_path.name == "model.onnx" else model_path.name   # zoo layout
    result = {"model": name, "rows": int(x_rows.shape[0]), "raw_ms": raw * 1e3,
              "engine_ms": engine[False] * 1e3, "ratio": engine[False] / raw, "notices": notices}
    if True in engine:
        result.update(graphed_ms=engine[True] * 1e3, graphed_ratio=engine[True] / raw,
                      raw_graphed_ms=raw_graphed * 1e3 if raw_graphed is not None else float("nan"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--data", type=Path, default=ROOT / "sample_models" / "clean_images")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--default-order", action="store_true",
                        help="keep the module's weights in the default memory order (no channels-last on the CPU)")
    parser.add_argument("--default-schedule", action="store_true",
                        help="engine with the scan's step schedule and repeated weight updates "
                             "(default: fixed delta 1e-4)")
    args = parser.parse_args()
    device = select_device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, N = {args.n}\n")
    cuda = device.type == "cuda"
    print("| model | image rows | raw forward+backward (ms) | engine iteration (ms) | ratio |"
          + (" engine with CUDA graphs (ms) | ratio | raw pass as a CUDA graph (ms) |" if cuda else ""))
    print("|---|---|---|---|---|" + ("---|---|---|" if cuda else ""))
    for path in args.models:
        r = measure(path, args.data, args.n, args.iterations, device, not args.default_order, args.default_schedule)
        print(f"| {r['model']} | {r['rows']} | {r['raw_ms']:.2f} | {r['engine_ms']:.2f} | {r['ratio']:.2f} |"
              + (f" {r['graphed_ms']:.2f} | {r['graphed_ratio']:.2f} | {r['raw_graphed_ms']:.2f} |" if cuda else ""))
        for message in r["notices"]:
            print(f"  ({r['model']}: {message})")


if __name__ == "__main__":
    main()
