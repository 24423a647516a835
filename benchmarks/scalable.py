"""Full method against the scalable mode on the composite zoo (issue 21, part 2), side by side.

For every model of the composite zoo (benchmarks/composite_zoo.py) with K <= --full-max-k both
the full method and the scalable mode (``lred scan --scalable``) are run; above it the scalable
mode alone. Every scan is one ``python -m scanner.cli scan MODEL --data clean.npz -n N --json``
subprocess; its wall time, CPU time and peak resident memory (``os.wait4`` rusage) are stored
beside the report (RESULTS/<model>/<mode>.json and .run.json). A scan whose report exists is not
run again, so an interrupted run resumes. The tables give, per model, the verdict, the inferred
target, the side of alpha of the verdict's p-value, the image passes (forward+backward image
rows of pattern estimation, ``image_passes`` in the report) and the time.

    python benchmarks/scalable.py --zoo DIR --out RESULTS [--models PATTERN ...] [--full-max-k 100]
                                  [-n 1] [--timeout-minutes 60] [--report-only] [-- EXTRA SCAN OPTIONS]
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = {"full": [], "scalable": ["--scalable"]}
SAMPLED = re.compile(r"sampled(\d+)(?:-r(\d+))?")   # sampled8: --sample-sources 8; sampled8-r20: --refresh-every 20


def mode_options(mode: str) -> list[str]:
    """The lred scan options of a mode: full, scalable, or sampledM[-rR] (sampled sources)."""
    if mode in MODES:
        return MODES[mode]
    match = SAMPLED.fullmatch(mode)
    if match is None:
        raise argparse.ArgumentTypeError(f"unknown mode {mode!r}: full, scalable or sampledM[-rR]")
    return ["--sample-sources", match[1]] + (["--refresh-every", match[2]] if match[2] else [])


def parse_mode(mode: str) -> str:
    mode_options(mode)
    return mode


def run_scan(model: dict, zoo: Path, mode: str, out: Path, images_per_class: int, timeout_minutes: float,
             extra: list[str]) -> dict:
    """One scan as a subprocess; returns its measurements (and writes them beside the report)."""
    folder = out / model["name"]
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / f"{mode}.json"
    command = [sys.executable, "-m", "scanner.cli", "scan", str(zoo / model["name"] / model["model"]),
               "--data", str(zoo / model["name"] / model["clean_images"]), "-n", str(images_per_class),
               "--json", str(report), "--timeout", str(60 * timeout_minutes), "-q", *mode_options(mode), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    run = {"command": command, "exit_status": os.waitstatus_to_exitcode(status), "wall_seconds": round(wall, 1),
           "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024),
           "stderr_tail": stderr[-2000:]}
    (folder / f"{mode}.run.json").write_text(json.dumps(run, indent=1) + "\n")
    return run


def load(out: Path, name: str, mode: str) -> tuple[dict | None, dict | None]:
    report, run = out / name / f"{mode}.json", out / name / f"{mode}.run.json"
    return (json.loads(report.read_text()) if report.exists() else None,
            json.loads(run.read_text()) if run.exists() else None)


def cell(report: dict | None, run: dict | None, alpha: float = 0.05) -> dict:
    """verdict, target, side of alpha, log10 p, passes, times of one scan (or why there is none)."""
    if report is None or run is None:
        return {"verdict": "not run"}
    if report.get("verdict") == "error":
        return {"verdict": f"error: {report.get('error', '')[:80]}", "cpu": run["cpu_seconds"],
                "wall": run["wall_seconds"]}
    log10_p = report["log10_p_value"]
    return {"verdict": report["verdict"], "target": report["most_suspicious_class"],
            "side": "< alpha" if log10_p < math.log10(report.get("alpha", alpha)) else ">= alpha",
            "log10_p": log10_p, "passes": report.get("image_passes"), "cpu": run["cpu_seconds"],
            "wall": run["wall_seconds"], "rss": run["peak_rss_mib"], "estimated": len(report["classes"])}


def truth_of(model: dict) -> str:
    truth = model["ground_truth"]
    if truth is None:
        return "clean"
    return f"{truth['target_class']} <- {len(truth['source_classes'])} sources"


def fmt(c: dict, key: str, spec: str = "") -> str:
    value = c.get(key)
    return "–" if value is None else format(value, spec)


def print_tables(models: list[dict], out: Path, full_max_k: int, modes: list[str]) -> None:
    for mode in (m for m in modes if m != "full"):
        print_mode_tables(models, out, full_max_k, mode)


def print_mode_tables(models: list[dict], out: Path, full_max_k: int, mode: str) -> None:
    print(f"K <= full-max-k: full method and {mode}, side by side\n")
    print(f"| model | truth (CTA, ASR) | full: verdict, target, side | full passes | full CPU s (wall) | "
          f"{mode}: verdict, target, side | {mode} passes | {mode} CPU s (wall) | passes full/{mode} | "
          f"CPU s full/{mode} | same verdict, target, side |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in models:
        if m["num_classes"] > full_max_k:
            continue
        full, fast = (cell(*load(out, m["name"], name)) for name in ("full", mode))
        same = ("–" if "side" not in full or "side" not in fast else
                "yes" if all(full[k] == fast[k] for k in ("verdict", "target", "side")) else "NO")
        ratio = (f"{full['passes'] / fast['passes']:.1f}x" if full.get("passes") and fast.get("passes") else "–")
        cpu = (f"{full['cpu'] / fast['cpu']:.1f}x" if full.get("cpu") and fast.get("cpu") else "–")
        print(f"| {m['name']} | {describe(m)} | {summary(full)} | {fmt(full, 'passes', ',')} | "
              f"{fmt(full, 'cpu')} ({fmt(full, 'wall')}) | {summary(fast)} | {fmt(fast, 'passes', ',')} | "
              f"{fmt(fast, 'cpu')} ({fmt(fast, 'wall')}) | {ratio} | {cpu} | {same} |")
    print(f"\nK > full-max-k: {mode} alone\n")
    print("| model | truth (CTA, ASR) | verdict, target, side | right | targets estimated | passes | CPU s | "
          "wall s | within 60 min | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in models:
        if m["num_classes"] <= full_max_k:
            continue
        fast = cell(*load(out, m["name"], mode))
        truth = m["ground_truth"]
        right = "–" if "side" not in fast else (
            "yes" if (fast["verdict"] == "clean") == (truth is None)
            and (truth is None or fast["target"] == truth["target_class"]) else "NO")
        within = "–" if "wall" not in fast else ("yes" if fast["wall"] <= 3600 else "no")
        print(f"| {m['name']} | {describe(m)} | {summary(fast)} | {right} | {fmt(fast, 'estimated')} | "
              f"{fmt(fast, 'passes', ',')} | {fmt(fast, 'cpu')} | {fmt(fast, 'wall')} | {within} | "
              f"{fmt(fast, 'rss')} |")
    print()


def describe(m: dict) -> str:
    asr = "" if m["attack_success_rate"] is None else f", ASR {m['attack_success_rate']:.2f}"
    return f"{truth_of(m)} (CTA {m['clean_test_accuracy']:.2f}{asr})"


def summary(c: dict) -> str:
    if "side" not in c:
        return c["verdict"]
    return f"{c['verdict']}, {c['target']}, {c['side']} (10^{c['log10_p']:.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True, help="composite zoo folder (its manifest.json)")
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument("--models", nargs="*", help="model names or fnmatch patterns (default: every built model)")
    parser.add_argument("--full-max-k", type=int, default=100, help="run the full method up to this K")
    parser.add_argument("-n", "--images-per-class", type=int, default=1)
    parser.add_argument("--timeout-minutes", type=float, default=60.0, help="per scan (lred scan --timeout)")
    parser.add_argument("--modes", nargs="*", default=list(MODES), type=parse_mode,
                        help="full, scalable and/or sampledM[-rR] (--sample-sources M --refresh-every R)")
    parser.add_argument("--report-only", action="store_true", help="print the tables of the results there are")
    parser.add_argument("extra", nargs="*", help="more lred scan options, after --")
    args = parser.parse_args(argv)
    models = [m for m in json.loads((args.zoo / "manifest.json").read_text())["models"] if m["attack_took"]
              and (not args.models or any(fnmatch.fnmatchcase(m["name"], p) for p in args.models))]
    models.sort(key=lambda m: (m["num_classes"], m["name"]))
    if not args.report_only:
        for m in models:
            for mode in args.modes:
                if mode == "full" and m["num_classes"] > args.full_max_k:
                    continue
                if (args.out / m["name"] / f"{mode}.json").exists():
                    continue
                print(f"{m['name']} {mode} ...", file=sys.stderr, flush=True)
                run = run_scan(m, args.zoo, mode, args.out, args.images_per_class, args.timeout_minutes, args.extra)
                print(f"{m['name']} {mode}: exit {run['exit_status']}, {run['wall_seconds']} s wall, "
                      f"{run['cpu_seconds']} s CPU", file=sys.stderr, flush=True)
    print_tables(models, args.out, args.full_max_k, args.modes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
