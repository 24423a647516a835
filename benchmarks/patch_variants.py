"""Experimental variants of the estimation, scanned over zoo models, with the separation table of
patch_benchmark.py per variant (issue 19: what was tried to separate patch backdoors from the
natural class pairs of clean models; docs/patch_zoo.md "Variants tried").

    python benchmarks/patch_variants.py run --zoo DIR [DIR ...] --variant VARIANT [--method lred-patch]
                                            [--subset PATTERN ...] [--seeds 0 1] [-n 8] --out DIR
    python benchmarks/patch_variants.py table --zoo DIR [DIR ...] --out DIR [--subset PATTERN ...]
    python benchmarks/patch_variants.py best --zoo DIR [DIR ...] --out DIR --folders NAME [NAME ...]

Each variant changes the scanner inside this process only (the scanner has no option for any of
them); ``run`` keeps one JSON per trial in OUT/METHOD-VARIANT/ (patch_benchmark.run_trial's
record: verdict, target, sources, log10 p, the K norms), and ``table`` prints, per variant
folder, the detections and clean trials flagged by the scanner's own test and the separation
table of patch_benchmark.py. ``best`` keeps,
per model and class, the smallest norm over the given variant folders (what a multi-start that
keeps the smallest verified pattern per class would report) and runs the test of Sec. 3.2 on it.

Variants:
- ``base``: the scanner as it is.
- ``freeze``: lred-patch's weights w stop moving once a job's Q_t first reaches pi (the mask
  then shrinks with w fixed, instead of following eq. (7)-(8) to the last iteration).
- ``init:S``: the patch engine's random starts drawn from seed 1000 + S instead of the image seed
  (same images: the spread of the norms that the optimisation alone causes).
- ``margin``: per class, the N correctly classified images of largest clean score margin (top
  score minus the next) instead of N drawn at random.
- ``start:R:S``: the additive engine (--method lred) starts every pattern at a random direction of
  L2 norm R (seed S) instead of v = 0.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # the repository root, for scanner
sys.path.insert(0, str(Path(__file__).resolve().parent))        # patch_benchmark
from patch_benchmark import SEPARATION_STATISTICS, run_trial, separation, zoo_models  # noqa: E402

from scanner.config import ScanConfig  # noqa: E402


def apply_variant(variant: str) -> None:
    """Change the scanner in this process as ``variant`` says (module docstring)."""
    import torch

    name, *args = variant.split(":")
    if name == "base":
        return
    if name == "freeze":
        import scanner.patch_engine as pe
        after_step = pe.PatchEngine._after_step

        def frozen(self: Any, active: list[int], q_all: torch.Tensor) -> None:
            reached = [i for i in active if self.reached[i]]
            kept = self.w[reached].clone()
            after_step(self, active, q_all)
            self.w[reached] = kept
        pe.PatchEngine._after_step = frozen                         # type: ignore[method-assign]
    elif name == "init":
        import scanner.patch_engine as pe
        patch_init = pe.PatchEngine.__init__

        def seeded(self: Any, *a: Any, **kw: Any) -> None:
            kw["seed"] = 1000 + int(args[0])
            patch_init(self, *a, **kw)
        pe.PatchEngine.__init__ = seeded                            # type: ignore[method-assign]
    elif name == "margin":
        import scanner.prepare as prepare
        from scanner.data import Selection
        seen: dict[str, np.ndarray] = {}
        score_kind, select = prepare.detect_score_kind, prepare.select_images

        def kind(model: Any, scores: np.ndarray) -> str:
            seen["scores"] = scores
            return score_kind(model, scores)

        def by_margin(labels: np.ndarray, predictions: np.ndarray, k: int, n: int, seed: int) -> Selection:
            drawn = select(labels, predictions, k, n, seed)          # its checks and counts
            ordered = np.sort(seen["scores"], axis=1)
            margin = ordered[:, -1] - ordered[:, -2]
            picked: list[int] = []
            for c in range(k):
                correct = np.flatnonzero((labels == c) & (predictions == c))
                picked.extend(sorted(correct[np.argsort(-margin[correct], kind="stable")][:n].tolist()))
            return Selection(np.asarray(picked, dtype=np.int64), drawn.per_class, drawn.correct_available)
        prepare.detect_score_kind, prepare.select_images = kind, by_margin   # type: ignore[assignment]
    elif name == "start":
        import scanner.engine as engine
        radius, seed = float(args[0]), int(args[1])
        init = engine.Engine.__init__

        def started(self: Any, *a: Any, **kw: Any) -> None:
            init(self, *a, **kw)
            v = torch.randn(self.v.shape, generator=torch.Generator().manual_seed(seed), dtype=self.v.dtype)
            norms = v.flatten(1).norm(dim=1).view((-1,) + (1,) * (v.dim() - 1))
            self.v = (v / norms * radius).to(self.v.device)
        engine.Engine.__init__ = started                            # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown variant {variant!r}")


def run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    apply_variant(args.variant)
    models, _ = zoo_models(args.zoo, args.subset)
    out = args.out / f"{args.method}-{args.variant.replace(':', '_')}"
    for m in models:
        for seed in (args.seeds if m["ground_truth"] is None else args.seeds[:1]):
            config = ScanConfig(method=args.method, images_per_class=args.images_per_class, seed=seed, device="cpu")
            trial = run_trial(m, args.method, config, out)       # patch_benchmark's trial, cached in OUT
            print(f"{m['name']} seed {seed}: {trial['verdict']} t={trial['target_class']} "
                  f"log10 p {trial['log10_p_value']} {trial['seconds']} s", file=sys.stderr, flush=True)


def table(args: argparse.Namespace) -> None:
    models, _ = zoo_models(args.zoo, getattr(args, "subset", None))
    truths = {(m["zoo"], m["name"]): m["ground_truth"] for m in models}
    names = list(SEPARATION_STATISTICS) + ["smallest norm at the true target"]
    print("| variant | detected by the test (right target) | clean flagged | "
          + " | ".join(f"no clean flagged: {n}" for n in names[:-1]) + f" | {names[-1]} |")
    print("|---|---|---|" + "---|" * len(names))
    for folder in sorted(p for p in args.out.iterdir() if p.is_dir()):
        trials = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        trials = [t for t in trials if (t["zoo"], t["model"]) in truths]
        attacks = [t for t in trials if truths[(t["zoo"], t["model"])] is not None]
        clean = [t for t in trials if truths[(t["zoo"], t["model"])] is None]
        hits = sum(t["verdict"] == "backdoor" and t["target_class"] == truths[(t["zoo"], t["model"])]["target_class"]
                   for t in attacks)
        flagged = sum(t["verdict"] == "backdoor" for t in clean)
        sep = separation(trials, truths)
        cells = [f"{sep[n]['detected']}/{sep[n]['attacks']}" if sep else "–" for n in names]
        print(f"| {folder.name} | {hits}/{len(attacks)} | {flagged}/{len(clean)} | " + " | ".join(cells) + " |")


def best(args: argparse.Namespace) -> None:
    from scanner.detection import detect

    models, _ = zoo_models(args.zoo, None)
    truths = {(m["zoo"], m["name"]): m["ground_truth"] for m in models}
    runs = {name: {p.name: json.loads(p.read_text()) for p in sorted((args.out / name).glob("*.json"))}
            for name in args.folders}
    print("| model | truth | " + " | ".join(f"{n}: target's norm, smallest other, log10 p" for n in args.folders)
          + " | smallest per class over all: target's norm, log10 p, verdict |")
    print("|---|---|" + "---|" * (len(args.folders) + 1))
    for key in sorted(set.intersection(*(set(r) for r in runs.values()))):
        trials = [runs[n][key] for n in args.folders]
        if any("pattern_norms" not in t for t in trials):
            continue
        truth = truths[(trials[0]["zoo"], trials[0]["model"])]
        target = None if truth is None else truth["target_class"]
        cells = []
        for t in trials:
            norms = np.asarray(t["pattern_norms"])
            own = "–" if target is None else f"{norms[target]:.3f}"
            other = np.delete(norms, target).min() if target is not None else norms.min()
            cells.append(f"{own}, {other:.3f}, {t['log10_p_value']:.2f}")
        least = np.min([t["pattern_norms"] for t in trials], axis=0)
        result = detect(least, 0.05)
        log10_p = result.log_p_value / np.log(10)
        verdict = f"backdoor (t={result.inferred_target})" if result.detected else "clean"
        own = "–" if target is None else f"{least[target]:.3f}"
        gt = "clean" if truth is None else f"{target} <- {','.join(map(str, truth['source_classes']))}"
        print(f"| {trials[0]['model']} | {gt} | " + " | ".join(cells) + f" | {own}, {log10_p:.2f}, {verdict} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--zoo", type=Path, nargs="+", required=True)
    r.add_argument("--variant", required=True)
    r.add_argument("--method", default="lred-patch")
    r.add_argument("--subset", nargs="*")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("-n", "--images-per-class", type=int, default=8)
    r.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("table")
    t.add_argument("--zoo", type=Path, nargs="+", required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--subset", nargs="*", help="model names or fnmatch patterns")
    b = sub.add_parser("best")
    b.add_argument("--zoo", type=Path, nargs="+", required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--folders", nargs="+", required=True, help="variant folders under --out")
    args = parser.parse_args(argv)
    {"run": run, "table": table, "best": best}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
