"""Same results before and after a refactoring: run a fixed set of scans, then diff their reports.

    python benchmarks/report_diff.py run OUT_DIR          # scans below, one JSON report each
    python benchmarks/report_diff.py diff BEFORE AFTER    # every field but timings and versions

``run`` scans the bundled sample models and the committed exporter fixtures with the default
schedule and with every other schedule and method (U-RED, P-RED, fixed step, relative step,
crossing bisection, Algorithm 1 as written), one torch thread each so that floating-point sums
are taken in the same order. ``diff`` prints, per scan, the fields that differ (norms, p-values,
verdicts, weights, iterations, ...), ignoring what is expected to change between two runs of the
same code (timings, versions, resource figures, the report path); exit status 1 if anything
differs, so a refactoring that claims bit-identical results can be checked in one command.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
FIXTURES = ROOT / "tests" / "fixtures" / "exported"
FIXTURE_DATA = FIXTURES / "fmnist_clean_10_per_class.npz"

# (name, model, data, extra options)
SCANS = [
    ("sample-backdoored-default", SAMPLES / "fmnist_cnn_backdoored.onnx", SAMPLES / "clean_images", []),
    ("sample-clean-default", SAMPLES / "fmnist_cnn_clean.onnx", SAMPLES / "clean_images", []),
    ("sample-backdoored-ured", SAMPLES / "fmnist_cnn_backdoored.onnx", SAMPLES / "clean_images",
     ["--method", "ured", "-n", "4", "--delta", "0.01"]),
    ("sample-backdoored-pred", SAMPLES / "fmnist_cnn_backdoored.onnx", SAMPLES / "clean_images",
     ["--method", "pred", "-n", "2", "--delta", "0.02"]),
    ("sample-backdoored-fixed", SAMPLES / "fmnist_cnn_backdoored.onnx", SAMPLES / "clean_images",
     ["--fixed-step", "--delta", "0.01", "-n", "4"]),
    ("sample-backdoored-fixed-crossing", SAMPLES / "fmnist_cnn_backdoored.onnx", SAMPLES / "clean_images",
     ["--fixed-step", "--delta", "0.02", "--crossing-resolution", "0.002", "-n", "4"]),
    ("sample-backdoored-relative", SAMPLES / "fmnist_cnn_backdoored.onnx", SAMPLES / "clean_images",
     ["--relative-step", "0.05", "--delta", "0.005", "-n", "4"]),
    ("sample-backdoored-exact", SAMPLES / "fmnist_cnn_backdoored.onnx", SAMPLES / "clean_images",
     ["--exact", "--delta", "0.05", "-n", "2"]),
    ("sample-clean-adaptive-n2", SAMPLES / "fmnist_cnn_clean.onnx", SAMPLES / "clean_images",
     ["-n", "2", "--seed", "3", "--adaptive-step", "0.05"]),
    ("dynamo-default", FIXTURES / "torch_dynamo_backdoored.onnx", FIXTURE_DATA, []),
    ("keras-default", FIXTURES / "keras_tf2onnx_backdoored.onnx", FIXTURE_DATA, []),
    ("sklearn-zipmap-default", FIXTURES / "sklearn_mlp_zipmap_backdoored.onnx", FIXTURE_DATA, []),
]

# fields that legitimately differ between two runs of the same code
IGNORED = {"timing", "seconds", "versions", "resources", "peak_rss_bytes", "peak_cuda_bytes", "report_path",
           "started", "finished", "audit", "host", "elapsed_seconds",
           "path", "source"}   # where the model and data lie (a clone elsewhere gives the same results)


def run(out: Path, only: list[str]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    worst = 0
    for name, model, data, options in SCANS:
        if only and name not in only:
            continue
        command = [sys.executable, "-m", "scanner.cli", "scan", str(model), "--data", str(data),
                   "--json", str(out / f"{name}.json"), "--quiet", "--device", "cpu", *options]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        print(f"{name}: exit {done.returncode} {done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ''}"
              f"{done.stderr.strip()[-200:] if done.returncode == 2 else ''}", flush=True)
        worst = max(worst, 1 if done.returncode == 2 else 0)
    return worst


def differences(before, after, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if key in IGNORED:
                continue
            if key not in before or key not in after:
                found.append(f"{path}/{key}: only in {'after' if key not in before else 'before'}")
                continue
            found += differences(before[key], after[key], f"{path}/{key}")
        return found
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{path}: length {len(before)} -> {len(after)}"]
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in differences(b, a, f"{path}[{i}]")]
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]


def diff(before: Path, after: Path) -> int:
    any_difference = False
    for name, *_ in SCANS:
        b, a = before / f"{name}.json", after / f"{name}.json"
        if not b.exists() or not a.exists():
            print(f"{name}: missing in {'before' if not b.exists() else 'after'}")
            any_difference = True
            continue
        found = differences(json.loads(b.read_text()), json.loads(a.read_text()))
        print(f"{name}: {'identical' if not found else f'{len(found)} differences'}")
        for line in found[:20]:
            print(f"    {line}")
        any_difference |= bool(found)
    return 1 if any_difference else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("out", type=Path)
    run_parser.add_argument("--only", nargs="*", default=[], help="scan names to run (default: all)")
    diff_parser = sub.add_parser("diff")
    diff_parser.add_argument("before", type=Path)
    diff_parser.add_argument("after", type=Path)
    args = parser.parse_args()
    sys.exit(run(args.out, args.only) if args.command == "run" else diff(args.before, args.after))


if __name__ == "__main__":
    main()
