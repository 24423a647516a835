"""Scan the model zoo with L-RED, U-RED and P-RED and print the paper's Tables 2 and 3.

Every scan is one ``lred scan ... --json`` subprocess; its wall time, CPU time and peak
resident memory (``os.wait4`` rusage) are stored beside the report. A scan whose report
already exists is not run again, so an interrupted run resumes where it stopped.

    python benchmarks/run.py --zoo DIR --out RESULTS [--subset PATTERN ...] [--methods lred8 lred2 ured8 pred8]
                             [--delta 1e-2] [--crossing-resolution R] [--relative-step K] [--adaptive-step M]
                             [--fixed-step] [--exact]
                             [--threads 1] [--json all.json] [--report-only]

Table 2 counts, per group, attacks detected with the right target (clean: models with no
detection); Table 3 gives mean seconds per scan. Results live under
RESULTS/<setting>/<model>/<method>.json (the lred report) and .run.json (measurements).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo

from scanner import detection

ROOT = Path(__file__).resolve().parent.parent
GROUP_ORDER = [f"{g}-{k}" for g in zoo.GROUPS for k in zoo.SOURCE_COUNTS] + ["clean"]
METHODS = {  # name -> (lred --method, N, extra flags)
    "lred8": ("lred", 8, []), "lred2": ("lred", 2, []), "ured8": ("ured", 8, []), "pred8": ("pred", 8, []),
}


@dataclass(frozen=True)
class Setting:
    """Step settings shared by every scan of a run (they name its results folder)."""

    delta: float | None = None
    crossing_resolution: float | None = None
    relative_step: float | None = None
    exact: bool = False
    adaptive_step: float | None = None
    fixed_step: bool = False

    @property
    def label(self) -> str:
        parts = [f"delta{self.delta:g}" if self.delta is not None else "delta-default"]
        if self.crossing_resolution is not None:
            parts.append(f"cr{self.crossing_resolution:g}")
        if self.relative_step is not None:
            parts.append(f"rel{self.relative_step:g}")
        if self.adaptive_step is not None:
            parts.append(f"adaptive{self.adaptive_step:g}")
        if self.fixed_step:
            parts.append("fixed")
        if self.exact:
            parts.append("exact")
        return "_".join(parts)

    def flags(self) -> list[str]:
        flags = []
        if self.delta is not None:
            flags += ["--delta", f"{self.delta:g}"]
        if self.crossing_resolution is not None:
            flags += ["--crossing-resolution", f"{self.crossing_resolution:g}"]
        if self.relative_step is not None:
            flags += ["--relative-step", f"{self.relative_step:g}"]
        if self.adaptive_step is not None:
            flags += ["--adaptive-step", f"{self.adaptive_step:g}"]
        if self.fixed_step:
            flags.append("--fixed-step")
        if self.exact:
            flags.append("--exact")
        return flags


def scan_command(model: Path, data: Path, method: str, setting: Setting, report: Path) -> list[str]:
    lred_method, n, extra = METHODS[method]
    return [sys.executable, "-m", "scanner.cli", "scan", str(model), "--data", str(data), "--method", lred_method,
            "-n", str(n), "--quiet", "--json", str(report), *setting.flags(), *extra]


def run_scan(command: list[str], report: Path, threads: int | None) -> dict:
    """Run one scan; measure wall time and, from os.wait4's rusage, CPU time and peak RSS."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if threading.current_thread() is threading.main_thread():
        # a SIGTERM to this script (kill, timeout) unwinds through the handler below, so the scan
        # it is waiting for is stopped with it instead of running on as an orphan
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        # communicate() would reap the child itself; read the pipes, then reap it with wait4
        stdout, stderr = process.stdout.read(), process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        process.kill()
        process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    return {"command": command, "exit_code": process.returncode, "wall_seconds": round(seconds, 2),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "threads": threads,
            "stdout": stdout[-2000:], "stderr": stderr[-2000:], "report": report.name}


def cached_scan(zoo_dir: Path, out: Path, model: dict, method: str, setting: Setting, threads: int | None,
                extra: list[str] = (), run_missing: bool = True) -> tuple[dict, dict] | None:
    """(measurements, lred report) of one scan, read from OUT/<setting>/<model>/ when both files are
    there, else run now (None when missing and ``run_missing`` is false); a scan that wrote no
    report counts as verdict "error"."""
    folder = out / setting.label / model["name"]
    report_path, run_path = folder / f"{method}.json", folder / f"{method}.run.json"
    if not (report_path.exists() and run_path.exists()):
        if not run_missing:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        command = scan_command(zoo_dir / model["name"] / model["model"],
                               zoo_dir / model["name"] / model["clean_images"], method, setting, report_path)
        measured = run_scan(command + list(extra), report_path, threads)
        run_path.write_text(json.dumps(measured, indent=1) + "\n")
        print(f"{model['name']} {setting.label} {method}: exit {measured['exit_code']}, "
              f"{measured['wall_seconds']:.0f} s, {measured['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    measured = json.loads(run_path.read_text())
    report = json.loads(report_path.read_text()) if report_path.exists() else {"verdict": "error"}
    return measured, report


def summarize(model: dict, method: str, run: dict, report: dict) -> dict:
    """One row of raw results: ground truth, verdict, and whether it counts as a success."""
    truth = model["ground_truth"]
    detected = report.get("verdict") == "backdoor"
    if report.get("verdict") == "error":
        success = False
    elif truth is None:
        success = not detected
    else:
        success = detected and report.get("target_class") == truth["target_class"]
    norms = [c["pattern_norm"] for c in report.get("classes", [])]
    true_norm = norms[truth["target_class"]] if truth and norms else None
    # Both p-values from the stored norms (reports written before the calibrated p-value existed
    # carry only the paper's); they share the inferred target, only the side of alpha differs.
    tested = [p["pattern_norm"] for p in report.get("pairs", [])] or norms
    by_basis = {}
    if tested and report.get("verdict") != "error":
        test = detection.detect(np.array(tested), report["alpha"])
        right = truth is not None and report.get("most_suspicious_class") == truth["target_class"]
        for basis in detection.P_VALUE_BASES:
            found = test.detected_by(basis)
            by_basis[basis] = {"log10_p_value": round(test.log_p_value_of(basis) / math.log(10.0), 3),
                               "success": (not found) if truth is None else (found and right)}
    return {
        "model": model["name"], "group": model["table_group"], "arch": model["spec"]["arch"], "method": method,
        "true_target": truth["target_class"] if truth else None,
        "true_sources": truth["source_classes"] if truth else [],
        "verdict": report.get("verdict"), "target_class": report.get("target_class"),
        "source_classes": report.get("source_classes"), "most_suspicious_class": report.get("most_suspicious_class"),
        "p_value": report.get("p_value"), "log10_p_value": report.get("log10_p_value"),
        "true_target_norm": true_norm,
        "min_norm": min(norms) if norms else None,
        "median_norm": sorted(norms)[len(norms) // 2] if norms else None,
        "success": success, "by_basis": by_basis, "exit_code": run["exit_code"], "wall_seconds": run["wall_seconds"],
        "cpu_seconds": run["cpu_seconds"], "peak_rss_mb": run["peak_rss_mb"],
        "warnings": report.get("warnings", []), "error": report.get("error"),
    }


def table(rows: list[dict], methods: list[str], cell) -> str:
    groups = [g for g in GROUP_ORDER if any(r["group"] == g for r in rows)]
    lines = ["| method | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for method in methods:
        cells = []
        for group in groups:
            chosen = [r for r in rows if r["method"] == method and r["group"] == group]
            cells.append(cell(chosen) if chosen else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(rows: list[dict], methods: list[str], setting: Setting) -> str:
    methods = [m for m in methods if any(r["method"] == m for r in rows)]
    out = [(f"Setting: {setting.label} ({' '.join(setting.flags()) or 'scanner defaults'}); "
            f"{len({r['model'] for r in rows})} models, {len(rows)} scans."), "",
           "Table 2 — successful detections (attack: detected with the right target; clean: not detected),",
           "as the scans decided", "",
           table(rows, methods, lambda c: f"{sum(r['success'] for r in c)}/{len(c)}"), "",
           *[line for basis in detection.P_VALUE_BASES for line in (
               f"Table 2 with the {basis} p-value (recomputed from the stored norms)", "",
               table(rows, methods,
                     lambda c, b=basis: f"{sum(r['by_basis'].get(b, {}).get('success', False) for r in c)}"
                                        f"/{len(c)}"), "")],
           "Table 3 — mean wall seconds per scan", "",
           table(rows, methods, lambda c: f"{sum(r['wall_seconds'] for r in c) / len(c):.0f}"), "",
           "Mean CPU seconds per scan (user + system, all threads; steadier than wall time on a shared machine)", "",
           table(rows, methods, lambda c: f"{sum(r['cpu_seconds'] for r in c) / len(c):.0f}"), "",
           "Peak resident memory per scan, MB (max over the group's scans)", "",
           table(rows, methods, lambda c: f"{max(r['peak_rss_mb'] for r in c):.0f}"), "",
           "Per scan", "",
           ("| model | method | truth (target <- sources) | verdict | detected target | log10 p | "
            "log10 p paper / calibrated | ‖v‖ true target / min / median | s | MB |"),
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model"], methods.index(r["method"]))):
        truth = f"{r['true_target']} <- {','.join(map(str, r['true_sources']))}" if r["true_target"] is not None \
            else "clean"
        norms = " / ".join("–" if v is None else f"{v:.3f}"
                           for v in (r["true_target_norm"], r["min_norm"], r["median_norm"]))
        logp = "–" if r["log10_p_value"] is None else f"{r['log10_p_value']:.1f}"
        found = "–" if r["target_class"] is None else str(r["target_class"])
        both = " / ".join(f"{r['by_basis'][b]['log10_p_value']:.1f}" if b in r["by_basis"] else "–"
                          for b in detection.P_VALUE_BASES[::-1])
        out.append(f"| {r['model']} | {r['method']} | {truth} | {r['verdict']}{'' if r['success'] else ' ✗'} | "
                   f"{found} | {logp} | {both} | {norms} | {r['wall_seconds']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(out) + "\n"


def add_zoo_arguments(parser: argparse.ArgumentParser) -> None:
    """--zoo, --out and --subset, shared by the benchmark commands."""
    parser.add_argument("--zoo", type=Path, default=zoo.DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "lred" / "zoo-results")
    parser.add_argument("--subset", nargs="*", help="model names or fnmatch patterns")


def zoo_models(zoo_dir: Path, subset: list[str] | None) -> list[dict]:
    """The zoo's models whose attack took (and clean ones), restricted to ``subset`` when given."""
    manifest = json.loads((zoo_dir / "manifest.json").read_text())
    models = [m for m in manifest["models"] if m["attack_took"]]
    if subset:
        names = {s.name for s in zoo.select([zoo.ModelSpec(**m["spec"]) for m in models], subset)}
        models = [m for m in models if m["name"] in names]
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_zoo_arguments(parser)
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--delta", type=float, default=None, help="step length (default: the scanner's)")
    parser.add_argument("--crossing-resolution", type=float, default=None)
    parser.add_argument("--relative-step", type=float, default=None)
    parser.add_argument("--adaptive-step", type=float, default=None)
    parser.add_argument("--fixed-step", action="store_true", help="steps of exactly delta")
    parser.add_argument("--exact", action="store_true", help="the paper-exact per-target loop")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for each scan")
    parser.add_argument("--json", type=Path, default=None, help="write every raw result here")
    parser.add_argument("--report-only", action="store_true", help="run no scan; tabulate what exists")
    args = parser.parse_args(argv)
    setting = Setting(args.delta, args.crossing_resolution, args.relative_step, args.exact, args.adaptive_step,
                      args.fixed_step)
    models = zoo_models(args.zoo, args.subset)
    rows = []
    for model in models:
        for method in args.methods:
            found = cached_scan(args.zoo, args.out, model, method, setting, args.threads,
                                run_missing=not args.report_only)
            if found is not None:
                rows.append(summarize(model, method, *found))
    if args.json is not None:
        args.json.write_text(json.dumps({"setting": setting.label, "flags": setting.flags(), "results": rows},
                                        indent=1) + "\n")
    print(render(rows, args.methods, setting), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
