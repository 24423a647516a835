"""benchmarks/patch_variants.py: the per-variant table over stored trials (no scan runs here)."""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def variants() -> ModuleType:
    return load_benchmark("patch_variants")


def test_the_table_counts_the_tests_verdicts_and_the_separation_per_variant(
        variants: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    models = [{"name": "a1", "attack_took": True, "ground_truth": {"target_class": 0, "source_classes": [1]}},
              {"name": "c1", "attack_took": True, "ground_truth": None}]
    (zoo / "manifest.json").write_text(json.dumps({"models": models}))
    out = tmp_path / "out"
    stored = [("lred-patch-base", ([1.0, 5.0, 6.0], "backdoor", 0), ([3.0, 4.0, 5.0], "clean", None)),
              ("lred-patch-margin", ([4.0, 3.0, 6.0], "clean", None), ([3.0, 4.0, 5.0], "backdoor", 0))]
    for variant, attack, clean in stored:
        (out / variant).mkdir(parents=True)
        for model, (norms, verdict, target) in [("a1", attack), ("c1", clean)]:
            (out / variant / f"zoo-{model}-s0.json").write_text(json.dumps(
                {"zoo": "zoo", "model": model, "verdict": verdict, "target_class": target, "pattern_norms": norms}))
    variants.table(type("A", (), {"zoo": [zoo], "out": out})())
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| lred-patch")]
    assert rows[0].startswith("| lred-patch-base | 1/1 | 0/1 | 1/1 |") and rows[0].endswith("| 1/1 |")
    assert rows[1].startswith("| lred-patch-margin | 0/1 | 1/1 | 0/1 |") and rows[1].endswith("| 0/1 |")


def test_an_unknown_variant_stops_the_script(variants: ModuleType) -> None:
    with pytest.raises(SystemExit, match="unknown variant 'nope'"):
        variants.apply_variant("nope")


def test_best_tests_the_smallest_norm_per_class_over_the_variants(
        variants: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    models = [{"name": "a1", "attack_took": True, "ground_truth": {"target_class": 0, "source_classes": [1]}}]
    (zoo / "manifest.json").write_text(json.dumps({"models": models}))
    out = tmp_path / "out"
    # neither start alone makes class 0 an outlier; the smallest per class over both does
    for name, norms in [("v0", [2.0, 2.1, 2.2, 2.3, 2.4, 2.5]), ("v1", [0.1, 1.0, 5.0, 5.0, 5.0, 5.0])]:
        (out / name).mkdir(parents=True)
        (out / name / "zoo-a1-s0.json").write_text(json.dumps(
            {"zoo": "zoo", "model": "a1", "pattern_norms": norms, "log10_p_value": -0.5}))
    variants.best(type("A", (), {"zoo": [zoo], "out": out, "folders": ["v0", "v1"]})())
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| a1 ")]
    assert row.startswith("| a1 | 0 <- 1 | 2.000, 2.100, -0.50 | 0.100, 1.000, -0.50 | 0.100, ")
    assert row.endswith("backdoor (t=0) |")
