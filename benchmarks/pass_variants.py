"""Options the issue lists for the forward+backward pass itself: channels-last memory format and
torch.compile, each against the plain eager pass of the converted module, on the same image rows
as one L-RED iteration with every target active (K(K-1)N rows).

Variants run in interleaved rounds (A, B, C, A, B, C, ...) and the table gives the median, so
that a machine shared with other work biases them alike; torch.compile's first call (the
compilation) is reported on its own.

    python benchmarks/pass_variants.py [MODEL.onnx ...] [--data DIR] [--rounds 7] [--iterations 5] [--no-compile]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from iteration_cost import DEFAULT_MODELS, iteration_rows, prepare_inputs, raw_pass

from scanner.estimation import select_device

ROOT = Path(__file__).resolve().parent.parent


def variants(classifier, x_rows: torch.Tensor, target_of_row: torch.Tensor, device: torch.device,
             compile_too: bool = True) -> dict:
    """name -> (step function, seconds its first call took)."""
    out = {"eager": raw_pass(classifier.scores, classifier.log_posterior, x_rows, target_of_row)}
    if x_rows.dim() == 4:
        channels_last = copy.deepcopy(classifier)        # .to(memory_format) converts in place
        channels_last.module.to(memory_format=torch.channels_last)
        out["channels_last"] = raw_pass(channels_last.scores, channels_last.log_posterior,
                                        x_rows.contiguous(memory_format=torch.channels_last), target_of_row)
    if compile_too:
        out["torch.compile"] = raw_pass(torch.compile(classifier.scores), classifier.log_posterior, x_rows,
                                        target_of_row)
    first = {}
    for name, step in out.items():
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        first[name] = time.perf_counter() - start
    return {name: (step, first[name]) for name, step in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--data", type=Path, default=ROOT / "sample_models" / "clean_images")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=5, help="passes per variant per round")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave torch.compile out (it compiles for seconds to minutes)")
    args = parser.parse_args()
    device = select_device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, N = {args.n}, "
          f"{args.rounds} rounds of {args.iterations} passes\n")
    print("| model | rows | variant | first call (s) | median pass (ms) | vs eager |")
    print("|---|---|---|---|---|---|")
    for model_path in args.models:
        data = args.data
        if model_path.name == "model.onnx" and (model_path.parent / "clean.npz").exists():
            data = model_path.parent / "clean.npz"          # zoo layout
        classifier, x, y, num_classes = prepare_inputs(model_path, data, args.n, device, channels_last=False)
        x_rows, target_of_row = iteration_rows(x, y, num_classes, device)
        found = variants(classifier, x_rows, target_of_row, device, not args.no_compile)
        times = {name: [] for name in found}
        for _ in range(args.rounds):
            for name, (step, _) in found.items():
                start = time.perf_counter()
                for _ in range(args.iterations):
                    step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - start) / args.iterations)
        eager = statistics.median(times["eager"])
        name_of = model_path.parent.name if model_path.name == "model.onnx" else model_path.name
        for name, (_, first) in found.items():
            median = statistics.median(times[name])
            print(f"| {name_of} | {x_rows.shape[0]} | {name} | {first:.2f} | {median * 1e3:.2f} | "
                  f"{median / eager:.2f} |")


if __name__ == "__main__":
    main()
