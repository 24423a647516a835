"""Does the scalable mode's screen score predict the full method's final ||v_t||? (issue 21)

For each composite-zoo model whose full-method report ``benchmarks/scalable.py`` left in
``RESULTS/MODEL/full.json``, this runs the screen of ``scanner/scalable.py`` (Algorithm 1 for
every target, ``B`` iterations, the same engine, schedule and jobs as ``--scalable``) and
computes, for every putative target t, two scores at the screen's v_t and w:

* ``rise``: the screen's own score (``scalable.progress_scores``): the rise of
  J_t = sum_s w_s mean_{x in D_s} log p(t | [x + v_t]_c) from v = 0 per unit ||v_t||;
* ``extrapolated``: minus the norm at which J_t would reach log(1/2) (a posterior of 1/2 makes t
  the predicted class) when it keeps rising at that rate: -(||v_t|| + max(log(1/2) - J_t, 0) / rise).

It prints, per model and B, the Spearman rank correlation of each score with 1 / ||v_t|| of the
full method (the statistic of the test), and the rank each score gives to the three targets
with the smallest full-method norms (0 = ranked first; the screen keeps ``--screen-candidates``
= 2 by default). Forward passes only after the screen; nothing is written.

    OMP_NUM_THREADS=1 python benchmarks/screen_predictors.py --zoo /work/composite_zoo \\
        --results RESULTS --models 'k100-*' --iterations 3 10
    OMP_NUM_THREADS=1 python benchmarks/screen_predictors.py --zoo /work/composite_zoo \\
        --results RESULTS --models 'k1000-*L1*' --sample-targets 30        # no full.json needed

``best single image`` is the largest rise of log p(t | x) over the single images, per unit ||v_t||.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner.clipping import clip_pixels  # noqa: E402
from scanner.config import ScanConfig  # noqa: E402
from scanner.engine import Engine  # noqa: E402
from scanner.lred import lred_jobs  # noqa: E402
from scanner.prepare import prepare  # noqa: E402
from scanner.scalable import progress_scores  # noqa: E402

FLIP_LEVEL = math.log(0.5)


def screen_scores(model: Path, data: Path, iterations: int,
                  targets: list[int] | None = None) -> dict[str, np.ndarray]:
    """The scores of every target (or of ``targets``, in that order), each screened over every
    other class for ``iterations`` iterations."""
    config = ScanConfig(images_per_class=1, device="cpu")
    prepared = prepare(model, data, config)
    x, y = torch.as_tensor(prepared.x), torch.as_tensor(prepared.y)
    jobs = lred_jobs(prepared.num_classes)
    engine = Engine(prepared.classifier, x, y, prepared.num_classes,
                    jobs if targets is None else [jobs[t] for t in targets], pi=config.pi,
                    schedule=config.schedule, max_iterations=config.max_iterations,
                    batch_images=config.batch_images)
    engine.iterate(range(len(engine.jobs)), rounds=iterations)
    rise = progress_scores(engine, config.batch_images)
    level, norm, best = (np.zeros(len(engine.jobs)) for _ in range(3))
    with torch.no_grad():
        clean = engine.classifier.log_posterior(engine.classifier.scores(clip_pixels(engine.x_all)))
        for i, job in enumerate(engine.jobs):
            rows = engine.batch.rows[i]
            scores = engine.classifier.scores(clip_pixels(engine.x_all[rows] + engine.v[i]))
            log_p = engine.classifier.log_posterior(scores)[:, job.target]
            per_class = torch.zeros(engine.K, dtype=engine.dtype).index_add_(0, engine.y_all[rows], log_p)
            level[i] = float((engine.w[i] * per_class * engine.inv_counts).sum())
            norm[i] = float(torch.linalg.vector_norm(engine.v[i]))
            best[i] = float((log_p - clean[rows, job.target]).max()) / max(norm[i], 1e-12)
    slope = np.where(np.isfinite(rise), np.maximum(rise, 1e-9), np.inf)
    extrapolated = np.where(np.isinf(rise) & (rise > 0), np.inf,
                            -(norm + np.maximum(FLIP_LEVEL - level, 0.0) / slope))
    return {"rise": rise, "extrapolated": extrapolated, "best single image": best}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True, help="benchmarks/scalable.py's --out")
    parser.add_argument("--models", nargs="*", default=["*"])
    parser.add_argument("--iterations", type=int, nargs="*", default=[3])
    parser.add_argument("--sample-targets", type=int, default=0,
                        help="models without full.json: screen the true target and this many others drawn "
                             "at random, and print the true target's rank by each score")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.sample_targets:
        return rank_true_target(args)
    print("| model | B | score | Spearman with 1/||v_t|| (full) | ranks of the 3 smallest full norms (targets) |")
    print("|---|---|---|---|---|")
    for full_report in sorted(args.results.glob("*/full.json")):
        name = full_report.parent.name
        if not any(fnmatch.fnmatchcase(name, p) for p in args.models):
            continue
        full = json.loads(full_report.read_text())
        norms = np.array([c["pattern_norm"] for c in sorted(full["classes"], key=lambda c: c["target_class"])])
        smallest = np.argsort(norms)[:3]
        for b in args.iterations:
            for kind, score in screen_scores(args.zoo / name / "model.onnx", args.zoo / name / "clean.npz", b).items():
                order = sorted(range(score.size), key=lambda t: (-score[t], t))
                ranks = [order.index(int(t)) for t in smallest]
                finite = np.where(np.isfinite(score), score, np.nanmax(score[np.isfinite(score)]) + 1)
                rho = spearmanr(finite, 1 / norms)[0]
                listed = ", ".join(f"{r} ({t})" for r, t in zip(ranks, smallest))
                print(f"| {name} | {b} | {kind} | {rho:+.2f} | {listed} |", flush=True)
    return 0


def rank_true_target(args: argparse.Namespace) -> int:
    print("| model | B | targets screened | score | rank of the true target (0 = first) | its score "
          "| others: median, max |")
    print("|---|---|---|---|---|---|---|")
    for entry in json.loads((args.zoo / "manifest.json").read_text())["models"]:
        name, truth = entry["name"], (entry.get("ground_truth") or {}).get("target_class")
        if truth is None or not any(fnmatch.fnmatchcase(name, p) for p in args.models):
            continue
        rng = np.random.default_rng(5)
        drawn = rng.choice(entry["num_classes"], size=args.sample_targets + 1, replace=False).tolist()
        targets = sorted(set([t for t in drawn if t != truth][:args.sample_targets]) | {truth})
        i = targets.index(truth)
        for b in args.iterations:
            for kind, score in screen_scores(args.zoo / name / "model.onnx", args.zoo / name / "clean.npz", b,
                                             targets).items():
                others = np.delete(score, i)
                print(f"| {name} | {b} | {len(targets)} | {kind} | {int((others > score[i]).sum())} | "
                      f"{score[i]:.3g} | {np.median(others):.3g}, {others.max():.3g} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
