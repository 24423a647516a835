"""What the planted backdoor pattern does to the very images a scan used.

For every attacked zoo model with a stored scan report, this applies the ground-truth pattern
(8-bit arithmetic, clipped, as the attack was trained) to the clean images listed in the report
(``data.selected``), classifies them with onnxruntime on the original ONNX file, and prints:

- the planted pattern's norm ||v|| (pixel range 0-1, as the scanner measures patterns);
- q_st, the fraction of each source class's scan images it sends to the target, and the largest
  fraction over all non-target classes: if that is below pi, the planted pattern is not a solution
  of the L-RED problem on these images (no weights w give Q_t >= pi), so the estimated pattern
  has to be something else, usually larger;
- the estimated ||v_t|| of the true target, the smallest estimated norm among the other classes,
  the verdict and both p-values, from the report.

It explains misses; it changes nothing in a scan. ``--amplitude-factor F`` scales the planted
amplitude (8-bit levels, capped at 255) to ask how strong the same pattern must be to reach pi.

    python benchmarks/planted_pattern.py --zoo ZOO --results RESULTS/delta-default [--method lred8]
                                         [--subset PATTERN ...] [--amplitude-factor F]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run
import zoo

SELECTED = re.compile(r"^x\[(\d+)\]$")


def selected_indices(report: dict) -> np.ndarray:
    """Indices into the clean .npz of the images the scan used (its report's data.selected)."""
    indices = []
    for entry in report["data"]["selected"]:
        match = SELECTED.match(entry)
        if match is None:
            raise ValueError(f"unexpected entry in data.selected: {entry!r}")
        indices.append(int(match.group(1)))
    return np.asarray(indices)


def planted_fractions(model_dir: Path, truth: dict, indices: np.ndarray, num_classes: int,
                      amplitude_factor: float = 1.0) -> tuple[float, np.ndarray]:
    """(||v|| of the planted pattern, fraction of each class's scan images sent to the target)."""
    clean = np.load(model_dir / "clean.npz")
    x, y = clean["x"][indices], clean["y"][indices]
    pattern = dict(truth["pattern"])
    pattern["amplitude_levels"] = min(255, round(pattern["amplitude_levels"] * amplitude_factor))
    levels = zoo.pattern_levels(pattern)
    predicted = zoo.onnx_predict(model_dir / "model.onnx", zoo.embed(x, levels))
    target = truth["target_class"]
    fractions = np.full(num_classes, np.nan)
    for c in range(num_classes):
        if c != target and np.any(y == c):
            fractions[c] = float(np.mean(predicted[y == c] == target))
    return float(np.linalg.norm(levels.astype(np.float64) / 255.0)), fractions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True, help="a setting folder of run.py: <model>/<method>.json")
    parser.add_argument("--method", default="lred8")
    parser.add_argument("--subset", nargs="*", default=None, help="model names or fnmatch patterns")
    parser.add_argument("--amplitude-factor", type=float, default=1.0,
                        help="scale the planted amplitude (default 1: the pattern as trained)")
    args = parser.parse_args()

    rows = []
    for entry in run.zoo_models(args.zoo, args.subset):
        name, truth = entry["name"], entry["ground_truth"]
        if truth is None:  # a clean model: no planted pattern
            continue
        report_path = args.results / name / f"{args.method}.json"
        if not report_path.exists():
            print(f"{name}: no report at {report_path}, skipped", file=sys.stderr)
            continue
        report = json.loads(report_path.read_text())
        norms = {c["target_class"]: c["pattern_norm"] for c in report["classes"]}
        num_classes = len(norms)
        target, sources = truth["target_class"], truth["source_classes"]
        planted_norm, fractions = planted_fractions(args.zoo / name, truth, selected_indices(report), num_classes,
                                                    args.amplitude_factor)
        pi = report["config"]["pi"]
        best = int(np.nanargmax(fractions))
        others = min(v for c, v in norms.items() if c != target)
        detected = report["verdict"] == "backdoor" and report["target_class"] == target
        rows.append((
            name, entry["table_group"], f"{target} / {{{', '.join(map(str, sources))}}}",
            f"{entry['attack_success_rate']:.3f}", f"{planted_norm:.3f}",
            ", ".join(f"{s}: {fractions[s]:.3f}" for s in sources),
            f"{fractions[best]:.3f} (class {best})", "yes" if fractions[best] >= pi else "**no**",
            f"{norms[target]:.3f}", f"{others:.3f}",
            f"{report['verdict']} ({report['target_class'] if report['target_class'] is not None else '–'})"
            + ("" if detected else " **missed**"),
            f"{report['calibrated_log10_p_value']:.2f} / {report['paper_log10_p_value']:.2f}",
        ))

    header = ("model", "group", "target / sources", "ASR (test set)", "planted ||v||",
              "q_st of planted pattern, per source", "largest q_st (class)", "planted pattern reaches pi",
              "estimated ||v_t||, true target", "smallest other ||v||", "verdict (target)",
              "log10 p calibrated / paper")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
