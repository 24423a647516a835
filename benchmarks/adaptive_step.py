"""Prototype (benchmarks only): Algorithm 1 with a step length that adapts to the path's curvature.

Normalized steps of a fixed length delta waste length where the ascent direction turns (the
path zig-zags), and that waste stays in v: larger fixed steps inflate ||v_t||. This prototype
keeps one step length per target and adapts it from the angle between successive normalized
gradients g(tau-1), g(tau):

    cos >= grow_above    delta <- min(grow * delta, delta_max)     (straight path: lengthen)
    cos <  shrink_below  delta <- max(delta / 2, delta_min)        (turning path: shorten)

and bisects the step that first reaches Q_t >= pi down to ``crossing`` (as
``--crossing-resolution`` does). Everything else is Algorithm 1 as in scanner/lred.py: w by
eqs. (7)-(8), the forward pass at v(tau+1) serving both the stopping check and the next
gradient. One target at a time, torch only (no onnxruntime confirmation); the norms go through
the scanner's own order-statistic test.

    python benchmarks/adaptive_step.py MODEL.onnx --data CLEAN [-n 8] [--delta-min 1e-3]
        [--delta-max 2e-2] [--targets 2 6] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from scanner.clipping import clip_pixels
from scanner.config import ScanConfig
from scanner.detection import detect
from scanner.estimation import DifferentiableClassifier
from scanner.prepare import prepare
from scanner.weights import uniform_weights, update_weights


def estimate(classifier: DifferentiableClassifier, x: torch.Tensor, y: torch.Tensor, num_classes: int,
             target: int, *, pi: float, delta_min: float, delta_max: float, grow: float, grow_above: float,
             shrink_below: float, crossing: float, max_iterations: int, control: str = "cosine") -> dict:
    """One putative target: returns ||v_t||, iterations, passes and the final step length."""
    keep = y != target
    x, y = x[keep], y[keep]
    K = num_classes
    counts = torch.bincount(y, minlength=K).to(x.dtype)
    inv_counts = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    excluded = torch.zeros(1, K, dtype=torch.bool)
    excluded[0, target] = True
    w = torch.as_tensor(uniform_weights(K, target), dtype=x.dtype)
    v = torch.zeros(x.shape[1:], dtype=x.dtype)
    step, previous, delta = torch.zeros_like(v), None, delta_min
    passes, tau = 0, 0

    def fraction_at(pattern: torch.Tensor) -> tuple[float, torch.Tensor]:
        with torch.no_grad():
            hits = (classifier.scores(clip_pixels(x + pattern)).argmax(1) == target).to(x.dtype)
        q = torch.zeros(K, dtype=x.dtype).index_add_(0, y, hits) * inv_counts
        return float((w * q).sum()), q

    while True:
        u = v.expand_as(x).clone().requires_grad_(True)
        scores = classifier.scores(clip_pixels(x + u))
        log_p = classifier.log_posterior(scores)[:, target].sum()
        (row_grads,) = torch.autograd.grad(log_p, u)
        passes += 1
        hits = (scores.detach().argmax(1) == target).to(x.dtype)
        q = torch.zeros(K, dtype=x.dtype).index_add_(0, y, hits) * inv_counts
        fraction = float((w * q).sum())
        if tau > 0 and fraction >= pi:                                    # line 5
            low, high = 0.0, 1.0
            start = v - step
            while (high - low) * float(step.norm()) > crossing:          # bisect the crossing step
                middle = 0.5 * (low + high)
                passes += 1
                if fraction_at(start + middle * step)[0] >= pi:
                    high = middle
                else:
                    low = middle
            v = start + high * step
            break
        if tau >= max_iterations:
            break
        weight_change = 0.0
        if tau > 0:                                                       # lines 7-12
            updated = update_weights(q[None], torch.as_tensor([fraction], dtype=x.dtype), excluded)[0]
            weight_change = float((updated - w).abs().sum())
            w = updated
        per_source = torch.zeros((K,) + tuple(x.shape[1:]), dtype=x.dtype).index_add_(0, y, row_grads)
        gradient = ((w * inv_counts).reshape((K,) + (1,) * (x.dim() - 1)) * per_source).sum(0)
        direction = gradient / gradient.norm()
        if previous is not None and control == "cosine":
            cosine = float((direction * previous).sum())
            if cosine >= grow_above:
                delta = min(grow * delta, delta_max)
            elif cosine < shrink_below:
                delta = max(0.5 * delta, delta_min)
        elif control == "weights":
            if weight_change > shrink_below:
                delta = max(0.5 * delta, delta_min)
            elif weight_change < grow_above and fraction > 0:
                delta = min(grow * delta, delta_max)
        elif control == "flips":
            delta = delta_max if fraction == 0 else delta_min
        previous = direction
        step = delta * direction                                          # eq. (5), adaptive delta
        v = v + step
        tau += 1
    return {"target": target, "norm": float(v.norm()), "iterations": tau, "passes": passes,
            "final_delta": delta, "fraction": fraction}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--pi", type=float, default=0.9)
    parser.add_argument("--delta-min", type=float, default=1e-3)
    parser.add_argument("--delta-max", type=float, default=2e-2)
    parser.add_argument("--grow", type=float, default=1.25)
    parser.add_argument("--grow-above", type=float, default=0.9)
    parser.add_argument("--shrink-below", type=float, default=0.5)
    parser.add_argument("--crossing", type=float, default=1e-3)
    parser.add_argument("--control", choices=("cosine", "weights", "flips"), default="cosine",
                        help="cosine: angle of successive gradients; weights: L1 change of w per step "
                             "(--grow-above/--shrink-below are then thresholds on it); flips: delta_max "
                             "while no image is flipped (Q_t = 0), delta_min after")
    parser.add_argument("--max-iterations", type=int, default=20000)
    parser.add_argument("--targets", type=int, nargs="*", default=None, help="default: every class")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    # the scan's classifier and N correctly classified clean images per class (scanner/prepare.py)
    prepared = prepare(args.model, args.data, ScanConfig(images_per_class=args.n, device="cpu"))
    classifier, K = prepared.classifier, prepared.num_classes
    x, y = torch.as_tensor(prepared.x), torch.as_tensor(prepared.y)
    targets = range(K) if args.targets is None else args.targets
    results = []
    started = time.perf_counter()
    for t in targets:
        begun = time.perf_counter()
        r = estimate(classifier, x, y, K, t, pi=args.pi, delta_min=args.delta_min, delta_max=args.delta_max,
                     grow=args.grow, grow_above=args.grow_above, shrink_below=args.shrink_below,
                     crossing=args.crossing, max_iterations=args.max_iterations, control=args.control)
        r["seconds"] = round(time.perf_counter() - begun, 2)
        results.append(r)
    total = time.perf_counter() - started
    print("| target | ‖v_t‖ | iterations | forward passes | final δ | s |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['target']} | {r['norm']:.3f} | {r['iterations']} | {r['passes']} | {r['final_delta']:.4f} | "
              f"{r['seconds']:.1f} |")
    summary = {"model": str(args.model), "settings": {k: v for k, v in vars(args).items()
                                                      if k not in ("model", "data", "json")},
               "results": results, "estimation_seconds": round(total, 1)}
    if len(results) == K:
        test = detect(np.array([r["norm"] for r in results]), 0.05)
        summary.update(detected=test.detected, inferred_target=test.inferred_target,
                       log10_p_value=test.log10_p_value)
        print(f"\norder-statistic test: {'backdoor' if test.detected else 'clean'}, most suspicious "
              f"{test.inferred_target}, log10 p {test.log10_p_value:.2f}; estimation {total:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
