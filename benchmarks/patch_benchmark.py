"""Side-by-side benchmark of the scan methods on model zoos (issue 19, "Targets").

For every model of one or more zoo caches (the patch zoo of benchmarks/patch_zoo.py, the
additive zoo of benchmarks/zoo.py: any folder with their manifest.json), runs each requested
method through ``scanner.pipeline.scan`` in this process and prints one side-by-side table,
then a table per attack group and one per model:

    python benchmarks/patch_benchmark.py --zoo /work/patch_zoo [/work/zoo] --methods lred lred-patch nc lred:both
                                         [-n 8] [--seeds 0 1 2] [--subset PATTERN ...] [--results DIR]
                                         [--json FILE] [--threads 1] [--timeout S] [--set KEY=VALUE ...]

Methods: a name of the method registry (scanner/methods.py) runs ``ScanConfig(method=NAME)``;
``NAME:TRIGGER`` also sets ``ScanConfig(trigger=TRIGGER)`` (e.g. ``lred:both``, the
``--trigger both`` scan), and ``both`` alone is ``ScanConfig(trigger="both")`` with the default
method. A method that is not in the registry, or a trigger the config does not have or refuses,
is skipped with a message saying why; the others run.

Trials: an attacked model whose attack took (manifest ``attack_took``) is scanned once, with
the first image seed of ``--seeds`` (ScanConfig.seed: which N clean images per class); a clean
model once per seed. An attack that did not take is not counted.

Scores, per method and zoo:
- detected: verdict "backdoor" with ``target_class`` equal to the true target (a backdoor
  verdict naming another class is counted apart as "wrong target", never as a detection);
- right sources: among the detections, those whose inferred source set (the report's
  ``source_classes``) equals the true source set exactly; the mean Jaccard index
  |S ∩ T| / |S ∪ T| of the inferred S and true T over the same detections is given beside it;
- false positives: clean-model trials with verdict "backdoor";
- seconds: mean wall seconds of ``scan`` per trial (this process, ``--threads`` torch threads);
- errors: trials where the scan raised a scanner error (LredError); never a detection.

Separation (the last table): for each method, the most attacks that a threshold on one statistic
of the K estimated norms detects (with the right target) while it flags no clean trial, for a few
statistics: the ratio of the two smallest norms, the order-statistic p-value of Sec. 3.2 and
Neural Cleanse's MAD anomaly index. It says how far any decision rule on those norms could go,
apart from the rule the scanner uses (``--trigger both`` scans, two tests, are left out).

Every trial's result is kept in ``--results`` (default ~/.cache/lred/patch_benchmark), one
JSON file keyed by the model's sha256, the method label and a hash of the full ScanConfig and
the clean data's sha256, so an interrupted run continues where it stopped and a changed config
runs afresh.
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # the repository root, for scanner
from scanner.config import ScanConfig  # noqa: E402
from scanner.data import file_sha256_of  # noqa: E402
from scanner.errors import ConfigError, LredError  # noqa: E402
from scanner.methods import METHODS  # noqa: E402

DEFAULT_RESULTS = Path.home() / ".cache" / "lred" / "patch_benchmark"


# ------------------------------------------------------------------------------- methods

def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs as ScanConfig fields, each VALUE read as its field's type."""
    fields = {f.name: f for f in dataclasses.fields(ScanConfig)}
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE with KEY a ScanConfig field")
        kind = type(getattr(ScanConfig(), key))
        settings[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return settings


def resolve_method(label: str, images_per_class: int, timeout: float | None,
                   settings: dict[str, Any] | None = None) -> Callable[[int], ScanConfig] | str:
    """A factory seed -> ScanConfig for a method label, or the reason it is skipped (a string)."""
    name, _, trigger = label.partition(":")
    if name == "both" and not trigger:
        name, trigger = ScanConfig.method, "both"
    if name not in METHODS:
        return f"method {name!r} is not in the registry (scanner/methods.py has {', '.join(METHODS)})"
    extra: dict[str, Any] = dict(settings or {})
    if trigger:
        if "trigger" not in {f.name for f in dataclasses.fields(ScanConfig)}:
            return f"ScanConfig has no 'trigger' field here, so {label!r} cannot run"
        extra["trigger"] = trigger

    def make(seed: int) -> ScanConfig:
        return ScanConfig(method=name, images_per_class=images_per_class, seed=seed, device="cpu",
                          timeout=timeout, **extra)
    try:
        make(0)
    except ConfigError as exc:
        return f"{label!r}: {exc}"
    return make


def config_key(config: ScanConfig, data_sha256: str) -> str:
    """12 hex digits over the full config and the clean data's sha256."""
    text = json.dumps({"config": config.as_dict(), "data": data_sha256}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -------------------------------------------------------------------------------- models

def zoo_models(zoos: list[Path], subset: list[str] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """(models to scan, names of attacks that did not take), each model with ``zoo`` and ``folder``."""
    models, not_taken = [], []
    for zoo_dir in zoos:
        for m in json.loads((zoo_dir / "manifest.json").read_text())["models"]:
            if subset and not any(fnmatch.fnmatchcase(m["name"], p) for p in subset):
                continue
            if not m["attack_took"]:
                not_taken.append(f"{zoo_dir.name}/{m['name']}")
                continue
            models.append({**m, "zoo": zoo_dir.name, "folder": str(zoo_dir / m["name"])})
    return models, not_taken


def run_trial(model: dict[str, Any], label: str, config: ScanConfig, results: Path) -> dict[str, Any]:
    """One scan (or its cached result): verdict, target, sources, p-value, seconds, error."""
    from scanner.pipeline import scan

    folder = Path(model["folder"])
    data = folder / model["clean_images"]
    key = f"{model['sha256'][:16]}-{label.replace(':', '_')}-{config_key(config, file_sha256_of(data))}"
    path = results / f"{key}.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if cached["verdict"] == "error" or "pattern_norms" in cached:
            return cached                                  # else a record from before the norms were kept
    started = time.perf_counter()
    record: dict[str, Any] = {"zoo": model["zoo"], "model": model["name"], "method": label, "seed": config.seed,
                              "sha256": model["sha256"], "config": config.as_dict()}
    try:
        report = scan(folder / model["model"], data, config).report
    except LredError as exc:
        record.update(verdict="error", error=f"{type(exc).__name__}: {exc}", target_class=None,
                      source_classes=[], log10_p_value=None)
    else:
        record.update(verdict=report.verdict, target_class=report.target_class,
                      source_classes=list(report.source_classes), log10_p_value=report.log10_p_value,
                      most_suspicious_class=report.most_suspicious_class, error=None,
                      pattern_norms=[c.pattern_norm for c in report.classes],
                      patch_norms=[c.pattern_norm for c in report.patch_classes])
    record["seconds"] = round(time.perf_counter() - started, 2)
    results.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


# -------------------------------------------------------------------------------- scores

def score(trial: dict[str, Any], truth: dict[str, Any] | None) -> dict[str, Any]:
    """The trial's outcome against the ground truth (see the module docstring)."""
    flagged = trial["verdict"] == "backdoor"
    if truth is None:
        return {"kind": "clean", "false_positive": flagged}
    detected = flagged and trial["target_class"] == truth["target_class"]
    inferred, true = set(trial["source_classes"]), set(truth["source_classes"])
    return {"kind": "attack", "detected": detected, "wrong_target": flagged and not detected,
            "right_sources": detected and inferred == true,
            "jaccard": len(inferred & true) / len(inferred | true) if detected else None}


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and rates over the scored trials of one method (and zoo)."""
    attacks = [t for t in trials if t["score"]["kind"] == "attack"]
    clean = [t for t in trials if t["score"]["kind"] == "clean"]
    detections = [t for t in attacks if t["score"]["detected"]]
    jaccards = [t["score"]["jaccard"] for t in detections]
    return {
        "attacks": len(attacks), "detected": len(detections),
        "wrong_target": sum(t["score"]["wrong_target"] for t in attacks),
        "right_sources": sum(t["score"]["right_sources"] for t in detections),
        "mean_jaccard": sum(jaccards) / len(jaccards) if jaccards else None,
        "clean_trials": len(clean), "false_positives": sum(t["score"]["false_positive"] for t in clean),
        "errors": sum(t["verdict"] == "error" for t in trials),
        "mean_seconds": sum(t["seconds"] for t in trials) / len(trials) if trials else None,
    }


def _two_smallest_ratio(norms: np.ndarray) -> float:
    ordered = np.sort(norms)
    return float(ordered[1] / ordered[0])


def _minus_log_p(norms: np.ndarray) -> float:
    from scanner.detection import detect
    return -detect(norms, 0.05).calibrated_log_p_value


def _anomaly_index(norms: np.ndarray) -> float:
    from scanner.nc import anomaly_indices
    return float(anomaly_indices(norms)[int(np.argmin(norms))])


# statistic of the K norms, larger = more suspicious; each points at the class of the smallest norm
SEPARATION_STATISTICS: dict[str, Callable[[np.ndarray], float]] = {
    "ratio of the two smallest norms": _two_smallest_ratio,
    "-log p (Sec. 3.2, calibrated)": _minus_log_p,
    "MAD anomaly index (Neural Cleanse)": _anomaly_index,
}


def separation(trials: list[dict[str, Any]], truths: dict[tuple[str, str], dict[str, Any] | None]
               ) -> dict[str, dict[str, int]] | None:
    """For one method's trials: per statistic, the attacks whose true target has the smallest norm
    and whose statistic exceeds that of every clean trial (what a threshold flagging no clean
    trial detects), beside the counts. None without clean trials or attacks with norms."""
    kept = [t for t in trials if t.get("pattern_norms") and t["verdict"] != "error"]
    clean, attacks = [], []
    for t in kept:
        norms, truth = np.asarray(t["pattern_norms"], dtype=np.float64), truths[(t["zoo"], t["model"])]
        if truth is None:
            clean.append(norms)
        else:
            attacks.append((norms, int(truth["target_class"])))
    if not clean or not attacks:
        return None
    out: dict[str, dict[str, int]] = {}
    for name, statistic in SEPARATION_STATISTICS.items():
        bar = max(statistic(n) for n in clean)
        out[name] = {"detected": sum(int(np.argmin(n)) == target and statistic(n) > bar for n, target in attacks),
                     "attacks": len(attacks), "clean_trials": len(clean)}
    out["smallest norm at the true target"] = {
        "detected": sum(int(np.argmin(n)) == target for n, target in attacks),
        "attacks": len(attacks), "clean_trials": len(clean)}
    return out


def print_separation(rows: dict[str, dict[str, dict[str, int]]]) -> None:
    """The separation table (module docstring), one row per method."""
    if not rows:
        return
    names = list(next(iter(rows.values())))
    print("\nSeparation: attacks a threshold on each statistic detects (right target) with no clean trial flagged; "
          "last column: attacks whose true target has the smallest norm\n")
    print("| method | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for method, cells in rows.items():
        print(f"| {method} | " + " | ".join(_ratio(c["detected"], c["attacks"]) for c in cells.values()) + " |")


def _ratio(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.0f}%)" if b else "–"


def print_tables(summary: list[dict[str, Any]], by_group: dict[str, dict[str, str]], models: list[dict[str, Any]],
                 trials: list[dict[str, Any]], methods: list[str]) -> None:
    """The side-by-side table, detections per attack group, and the per-model table (Markdown)."""
    print("| method | zoo | attacks detected (right target) | wrong target | right sources / detections | "
          "mean Jaccard | clean flagged (FP) | errors | mean s per scan |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in summary:
        jac = "–" if row["mean_jaccard"] is None else f"{row['mean_jaccard']:.2f}"
        secs = "–" if row["mean_seconds"] is None else f"{row['mean_seconds']:.1f}"
        print(f"| {row['method']} | {row['zoo']} | {_ratio(row['detected'], row['attacks'])} | {row['wrong_target']} | "
              f"{_ratio(row['right_sources'], row['detected'])} | {jac} | "
              f"{_ratio(row['false_positives'], row['clean_trials'])} | {row['errors']} | {secs} |")
    groups = sorted({g for cells in by_group.values() for g in cells})
    print("\nDetections (right target) per attack group\n")
    print("| method | " + " | ".join(groups) + " |")
    print("|---|" + "---|" * len(groups))
    for method in methods:
        print(f"| {method} | " + " | ".join(by_group.get(method, {}).get(g, "–") for g in groups) + " |")
    print("\nPer model (B: backdoor verdict, t = target, s = sources, log10 p, seconds; clean: flagged/trials)\n")
    print("| zoo | model | truth | " + " | ".join(methods) + " |")
    print("|---|---|---|" + "---|" * len(methods))
    for model in models:
        truth = model["ground_truth"]
        gt = "clean" if truth is None else f"{truth['target_class']} <- {','.join(map(str, truth['source_classes']))}"
        cells = []
        for method in methods:
            mine = [t for t in trials if t["method"] == method and t["model"] == model["name"]
                    and t["zoo"] == model["zoo"]]
            cells.append(_cell(mine, truth))
        print(f"| {model['zoo']} | {model['name']} | {gt} | " + " | ".join(cells) + " |")


def _cell(mine: list[dict[str, Any]], truth: dict[str, Any] | None) -> str:
    if not mine:
        return "–"
    secs = sum(t["seconds"] for t in mine) / len(mine)
    if truth is None:
        return f"{sum(t['verdict'] == 'backdoor' for t in mine)}/{len(mine)} flagged, {secs:.0f} s"
    t = mine[0]
    if t["verdict"] == "error":
        return f"error, {secs:.0f} s"
    p = f"{t['log10_p_value']:.1f}"
    if t["verdict"] != "backdoor":
        return f"clean ({p}), {secs:.0f} s"
    mark = "" if t["score"]["detected"] else " WRONG"
    return (f"B t={t['target_class']}{mark} s={','.join(map(str, t['source_classes']))} ({p}), {secs:.0f} s")


# ---------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--zoo", type=Path, nargs="+", required=True, help="zoo folders with a manifest.json")
    parser.add_argument("--methods", nargs="+", default=["lred", "lred-patch", "nc"])
    parser.add_argument("-n", "--images-per-class", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="image seeds (clean models: every one)")
    parser.add_argument("--subset", nargs="*", help="model names or fnmatch patterns")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results cache (default %(default)s)")
    parser.add_argument("--json", type=Path, help="write every trial and the summary here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the CPU is shared)")
    parser.add_argument("--timeout", type=float, help="seconds per scan (ScanConfig.timeout)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a ScanConfig field for every method (e.g. patch_shift=4); repeatable")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    factories: dict[str, Callable[[int], ScanConfig]] = {}
    skipped: dict[str, str] = {}
    settings = parse_settings(args.settings)
    for label in args.methods:
        resolved = resolve_method(label, args.images_per_class, args.timeout, settings)
        if isinstance(resolved, str):
            skipped[label] = resolved
            print(f"skipping {label}: {resolved}", file=sys.stderr, flush=True)
        else:
            factories[label] = resolved
    models, not_taken = zoo_models(args.zoo, args.subset)
    if not_taken:
        print(f"not counted (attack did not take): {', '.join(not_taken)}", file=sys.stderr)
    trials = []
    for model in models:
        seeds = args.seeds if model["ground_truth"] is None else args.seeds[:1]
        for label, make in factories.items():
            for seed in seeds:
                trial = run_trial(model, label, make(seed), args.results)
                trial["score"] = score(trial, model["ground_truth"])
                trial["group"] = model["table_group"]
                trials.append(trial)
                print(f"{model['zoo']}/{model['name']} {label} seed {seed}: {trial['verdict']} "
                      f"t={trial['target_class']} s={trial['source_classes']} {trial['seconds']:.0f} s",
                      file=sys.stderr, flush=True)
    summary = [{"method": label, "zoo": zoo_dir.name,
                **summarize([t for t in trials if t["method"] == label and t["zoo"] == zoo_dir.name])}
               for label in factories for zoo_dir in args.zoo]
    by_group: dict[str, dict[str, str]] = {}
    for label in factories:
        for group in sorted({t["group"] for t in trials if t["score"]["kind"] == "attack"}):
            mine = [t for t in trials if t["method"] == label and t["group"] == group]
            by_group.setdefault(label, {})[group] = f"{sum(t['score']['detected'] for t in mine)}/{len(mine)}"
    print_tables(summary, by_group, models, trials, list(factories))
    truths = {(m["zoo"], m["name"]): m["ground_truth"] for m in models}
    separated = {label: sep for label in factories if not label.endswith(":both") and label != "both"
                 for sep in [separation([t for t in trials if t["method"] == label], truths)] if sep is not None}
    print_separation(separated)
    if skipped:
        print("\nSkipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if args.json:
        args.json.write_text(json.dumps({
            "settings": {"zoos": [str(z) for z in args.zoo], "methods": args.methods, "seeds": args.seeds,
                         "images_per_class": args.images_per_class, "threads": args.threads,
                         "subset": args.subset, "settings": args.settings},
            "skipped": skipped, "not_counted": not_taken, "summary": summary, "by_group": by_group,
            "separation": separated,
            "trials": trials}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
