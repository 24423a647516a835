"""How the step schedule changes the estimated norms, the p-value and the verdict.

Scans each model once per setting (one ``lred scan`` subprocess each, resumable like run.py)
and prints, per model and setting: verdict, detected target, ||v|| of the true target (when
known), median ||v|| of the other classes, log10 p-value, iterations of the slowest target,
and wall seconds.

    python benchmarks/step_study.py --zoo DIR --out RESULTS MODEL ... [--settings delta=1e-3 delta=1e-2
        delta=1e-2,cr=1e-3 delta=1e-2,rel=0.01] [--method lred] [-n 8] [--threads 1] [--json study.json]

MODEL is a zoo model name, or ``sample`` for sample_models/fmnist_cnn_backdoored.onnx
(ground truth: target 2) and ``sample-clean`` for its clean twin.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench
import zoo

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = {"sample": ("fmnist_cnn_backdoored.onnx", 2), "sample-clean": ("fmnist_cnn_clean.onnx", None)}
KEYS = {"delta": "delta", "cr": "crossing_resolution", "rel": "relative_step"}


def parse_setting(text: str) -> bench.Setting:
    """'delta=1e-2,cr=1e-3,rel=0.01' -> Setting."""
    values = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in KEYS:
            raise SystemExit(f"unknown setting key {key!r} in {text!r} (use {', '.join(KEYS)})")
        values[KEYS[key]] = float(value)
    return bench.Setting(**values)


def resolve(name: str, zoo_dir: Path) -> tuple[Path, Path, int | None]:
    """Model file, clean data and true target (None: clean model)."""
    if name in SAMPLES:
        file, target = SAMPLES[name]
        return ROOT / "sample_models" / file, ROOT / "sample_models" / "clean_images", target
    record = json.loads((zoo_dir / name / "model.json").read_text())
    truth = record["ground_truth"]
    return zoo_dir / name / record["model"], zoo_dir / name / record["clean_images"], \
        truth["target_class"] if truth else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--zoo", type=Path, default=zoo.DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "lred" / "step-study")
    parser.add_argument("--settings", nargs="+", default=["delta=1e-3", "delta=1e-2", "delta=1e-2,cr=1e-3"])
    parser.add_argument("--method", default="lred8", choices=list(bench.METHODS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for name in args.models:
        model, data, target = resolve(name, args.zoo)
        for text in args.settings:
            setting = parse_setting(text)
            folder = args.out / setting.label / name
            report_path, run_path = folder / f"{args.method}.json", folder / f"{args.method}.run.json"
            if not (report_path.exists() and run_path.exists()):
                folder.mkdir(parents=True, exist_ok=True)
                run = bench.run_scan(bench.scan_command(model, data, args.method, setting, report_path),
                                     report_path, args.threads)
                run_path.write_text(json.dumps(run, indent=1) + "\n")
                print(f"{name} {setting.label}: exit {run['exit_code']}, {run['wall_seconds']:.0f} s",
                      file=sys.stderr, flush=True)
            run = json.loads(run_path.read_text())
            report = json.loads(report_path.read_text())
            norms = [c["pattern_norm"] for c in report.get("classes", [])]
            others = [v for t, v in enumerate(norms) if t != target] if target is not None else norms
            rows.append({"model": name, "setting": setting.label, "flags": setting.flags(),
                         "true_target": target, "verdict": report.get("verdict"),
                         "target_class": report.get("target_class"),
                         "source_classes": report.get("source_classes"),
                         "log10_p_value": report.get("log10_p_value"),
                         "true_target_norm": norms[target] if target is not None and norms else None,
                         "median_other_norm": statistics.median(others) if others else None,
                         "norms": norms,
                         "max_iterations": max((c["iterations"] for c in report.get("classes", [])), default=None),
                         "wall_seconds": run["wall_seconds"], "cpu_seconds": run["cpu_seconds"],
                         "peak_rss_mb": run["peak_rss_mb"]})
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print("| model | setting | verdict | target (true) | sources | ‖v‖ true target | median ‖v‖ others | "
          "log10 p | max iterations | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        norm = "–" if r["true_target_norm"] is None else f"{r['true_target_norm']:.3f}"
        found = "–" if r["target_class"] is None else str(r["target_class"])
        print(f"| {r['model']} | {' '.join(r['flags'])} | {r['verdict']} | {found} ({r['true_target']}) | "
              f"{','.join(map(str, r['source_classes'] or [])) or '–'} | {norm} | {r['median_other_norm']:.3f} | "
              f"{r['log10_p_value']:.2f} | {r['max_iterations']} | {r['wall_seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
