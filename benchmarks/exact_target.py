"""Algorithm 1 read literally (``scanner/algorithm1.py``) for chosen putative target
classes of one model: the pattern norm, iterations and final source weights w per target,
without estimating the other targets (a full ``lred scan --exact`` estimates all K).

Used to check whether a miss of the default scan is also the paper-exact loop's (docs/benchmarks.md,
"the three L-RED misses").

    python benchmarks/exact_target.py MODEL.onnx --data CLEAN --targets 3 [--delta 1e-4] [--seed 0]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from iteration_cost import prepare_inputs

from scanner.algorithm1 import estimate_pattern_exact
from scanner.config import ScanConfig
from scanner.estimation import select_device


def main() -> None:
    defaults = ScanConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--targets", required=True, help="comma-separated target classes")
    parser.add_argument("--delta", type=float, default=1e-4, help="fixed step (the paper's 1e-4)")
    parser.add_argument("--pi", type=float, default=defaults.pi)
    parser.add_argument("--max-iterations", type=int, default=200000)
    parser.add_argument("--n", type=int, default=defaults.images_per_class)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--default-order", action="store_true",
                        help="keep the module's weights in the default memory order (no channels-last on the CPU)")
    args = parser.parse_args()
    device = select_device(args.device)
    classifier, x, y, num_classes = prepare_inputs(args.model, args.data, args.n, device, args.seed,
                                                   channels_last=not args.default_order)
    print(f"{args.model}: N = {args.n}, seed {args.seed}, delta {args.delta:g}, pi {args.pi:g}, {device}\n")
    print("| target | ||v_t|| | iterations | status | Q_t | largest source weights | seconds |")
    print("|---|---|---|---|---|---|---|")
    for target in (int(t) for t in args.targets.split(",")):
        start = time.perf_counter()
        estimate = estimate_pattern_exact(classifier, x, y, num_classes, target, pi=args.pi, delta=args.delta,
                                          max_iterations=args.max_iterations)
        order = np.argsort(-estimate.source_weights)[:3]
        weights = ", ".join(f"w_{s} {estimate.source_weights[s]:.3f}" for s in order)
        print(f"| {target} | {float(np.linalg.norm(estimate.pattern)):.4f} | {estimate.iterations} | "
              f"{estimate.status} | {estimate.fraction:.3f} | {weights} | {time.perf_counter() - start:.1f} |")


if __name__ == "__main__":
    main()
