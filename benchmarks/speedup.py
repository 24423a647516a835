"""Side by side: the same zoo models scanned with L-RED (N = 8) under several step settings.

The first setting is the baseline (by default the paper-exact loop at delta = 1e-4); every
other one is compared with it on each model: verdict, inferred target, side of alpha, the
backdoor target's ||v||, and wall and CPU seconds (speed-up = baseline / setting). Scans are
run through ``benchmarks/run.py`` (same results folders, resumable), one after another, so a
table mixes no two machines.

    python benchmarks/speedup.py --zoo DIR --out RESULTS [--subset PATTERN ...] [--threads 1]
        [--settings exact,delta=1e-4 fixed default] [--json out.json]

A setting is ``default`` (the scanner's defaults) or comma-separated ``exact``, ``fixed``
(``--fixed-step``), ``delta=D``, ``cr=R``, ``rel=K``, ``adaptive=M``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run

DEFAULT_SETTINGS = ["exact,delta=1e-4", "fixed", "default"]
BASES = run.detection.P_VALUE_BASES
ALPHA = 0.05


def parse_setting(text: str) -> run.Setting:
    fields: dict = {}
    for part in filter(None, text.split(",")):
        if part == "default":
            continue
        if part in ("exact", "fixed"):
            fields["exact" if part == "exact" else "fixed_step"] = True
            continue
        key, _, value = part.partition("=")
        name = {"delta": "delta", "cr": "crossing_resolution", "rel": "relative_step",
                "adaptive": "adaptive_step"}.get(key)
        if name is None or not value:
            raise SystemExit(f"bad setting part {part!r}")
        fields[name] = float(value)
    return run.Setting(**fields)


def scan(model: dict, setting: run.Setting, args: argparse.Namespace) -> dict:
    """One L-RED (N = 8) scan's summary row, with the largest iteration count over the targets."""
    measured, report = run.cached_scan(args.zoo, args.out, model, "lred8", setting, args.threads,
                                       extra=["--max-iterations", str(args.max_iterations)])
    row = run.summarize(model, "lred8", measured, report)
    row["max_iterations"] = max((c["iterations"] for c in report.get("classes", [])), default=None)
    return row


def decision(row: dict, basis: str) -> tuple[bool, int | None] | None:
    """(detected, inferred target when detected) with the given p-value, None for a failed scan."""
    test = row["by_basis"].get(basis)
    if test is None:
        return None
    detected = test["log10_p_value"] < math.log10(ALPHA)
    return detected, (row["most_suspicious_class"] if detected else None)


def agrees(row: dict, baseline: dict, basis: str) -> bool:
    """Same verdict and same inferred target (so the same side of alpha) with this p-value."""
    return decision(row, basis) is not None and decision(row, basis) == decision(baseline, basis)


def render(models: list[dict], labels: list[str], rows: dict) -> str:
    base = labels[0]
    out = [f"Baseline: {base}. Agreement = same verdict, same inferred target, same side of alpha, "
           f"with the calibrated / the paper's p-value (both recomputed from the stored norms).", "",
           "| model | truth | setting | verdict as scanned (target) | log10 p calibrated / paper "
           "| ‖v‖ true target / min | iterations (max over t) "
           "| wall s | CPU s | speed-up wall / CPU | agrees |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in models:
        b = rows[(model["name"], base)]
        for label in labels:
            r = rows[(model["name"], label)]
            truth = "clean" if r["true_target"] is None else f"{r['true_target']} <- " + ",".join(
                map(str, r["true_sources"]))
            found = f"{r['verdict']} ({r['target_class'] if r['target_class'] is not None else '–'})"
            norms = " / ".join("–" if v is None else f"{v:.3f}" for v in (r["true_target_norm"], r["min_norm"]))
            logp = " / ".join(f"{r['by_basis'][basis]['log10_p_value']:.1f}" if basis in r["by_basis"] else "–"
                              for basis in BASES)
            if label == base:
                speed, agreement = "1", "baseline"
            else:
                speed = f"{b['wall_seconds'] / r['wall_seconds']:.1f} / {b['cpu_seconds'] / r['cpu_seconds']:.1f}"
                agreement = " / ".join("yes" if agrees(r, b, basis) else "**no**" for basis in BASES)
            iterations = "–" if r["max_iterations"] is None else r["max_iterations"]
            out.append(f"| {model['name']} | {truth} | {label} | {found} | {logp} | {norms} | {iterations} | "
                       f"{r['wall_seconds']:.0f} | {r['cpu_seconds']:.0f} | {speed} | {agreement} |")
    out += ["", "| setting | models | agree with baseline (calibrated / paper) | right decision (calibrated / paper) "
                "| total wall s | total CPU s | "
                "speed-up (total wall / total CPU) |", "|---|---|---|---|---|---|---|"]
    total_b = [sum(rows[(m["name"], base)][k] for m in models) for k in ("wall_seconds", "cpu_seconds")]
    for label in labels:
        chosen = [rows[(m["name"], label)] for m in models]
        agree = " / ".join(str(sum(agrees(r, rows[(r["model"], base)], basis) for r in chosen)) for basis in BASES)
        right = " / ".join(str(sum(r["by_basis"].get(basis, {}).get("success", False) for r in chosen))
                           for basis in BASES)
        wall, cpu = sum(r["wall_seconds"] for r in chosen), sum(r["cpu_seconds"] for r in chosen)
        out.append(f"| {label} | {len(chosen)} | {agree} | {right} | {wall:.0f} | "
                   f"{cpu:.0f} | {total_b[0] / wall:.1f} / {total_b[1] / cpu:.1f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run.add_zoo_arguments(parser)
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for each scan")
    parser.add_argument("--max-iterations", type=int, default=100000,
                        help="tau_max for every setting (high, so that delta = 1e-4 is not cut short)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = [parse_setting(s) for s in args.settings]
    models = run.zoo_models(args.zoo, args.subset)
    rows = {}
    for model in models:
        for setting in settings:
            rows[(model["name"], setting.label)] = scan(model, setting, args)
    labels = [s.label for s in settings]
    if args.json is not None:
        args.json.write_text(json.dumps({"settings": labels, "results": list(rows.values())}, indent=1) + "\n")
    print(render(models, labels, rows), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
