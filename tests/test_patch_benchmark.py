"""benchmarks/patch_benchmark.py: method resolution, scoring and the results key (no scans run here)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import ModuleType

import pytest

from scanner.config import ScanConfig
from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("patch_benchmark")


def test_a_registered_method_gives_a_seeded_config_at_n_images_per_class(bench: ModuleType) -> None:
    make = bench.resolve_method("lred", 8, None)
    config = make(3)
    assert (config.method, config.images_per_class, config.seed, config.device) == ("lred", 8, 3, "cpu")


def test_a_method_missing_from_the_registry_is_skipped_with_the_reason(bench: ModuleType) -> None:
    reason = bench.resolve_method("no-such-method", 8, None)
    assert isinstance(reason, str) and "'no-such-method' is not in the registry" in reason and "lred" in reason


def test_the_both_trigger_runs_only_where_the_config_has_a_trigger_field(bench: ModuleType) -> None:
    resolved = bench.resolve_method("lred:both", 8, None)
    if "trigger" in {f.name for f in dataclasses.fields(ScanConfig)}:
        assert not isinstance(resolved, str) and resolved(0).trigger == "both"
    else:
        assert resolved == "ScanConfig has no 'trigger' field here, so 'lred:both' cannot run"


def test_the_results_key_changes_with_the_config_and_the_clean_data(bench: ModuleType) -> None:
    a = bench.config_key(ScanConfig(seed=0), "d1")
    assert a == bench.config_key(ScanConfig(seed=0), "d1") and len(a) == 12
    assert len({a, bench.config_key(ScanConfig(seed=1), "d1"), bench.config_key(ScanConfig(seed=0), "d2")}) == 3


TRUTH = {"target_class": 4, "source_classes": [1, 2, 3]}


@pytest.mark.parametrize(("verdict", "target", "sources", "expected"), [
    ("backdoor", 4, [3, 2, 1], {"detected": True, "wrong_target": False, "right_sources": True, "jaccard": 1.0}),
    ("backdoor", 4, [1, 2, 5], {"detected": True, "wrong_target": False, "right_sources": False, "jaccard": 0.5}),
    ("backdoor", 7, [1, 2, 3], {"detected": False, "wrong_target": True, "right_sources": False, "jaccard": None}),
    ("clean", None, [], {"detected": False, "wrong_target": False, "right_sources": False, "jaccard": None}),
    ("error", None, [], {"detected": False, "wrong_target": False, "right_sources": False, "jaccard": None}),
])
def test_an_attack_counts_only_with_the_right_target_and_sources_must_match_exactly(
        bench: ModuleType, verdict: str, target: int | None, sources: list[int], expected: dict) -> None:
    trial = {"verdict": verdict, "target_class": target, "source_classes": sources}
    assert bench.score(trial, TRUTH) == {"kind": "attack", **expected}


def test_summary_counts_detections_sources_false_positives_errors_and_mean_seconds(bench: ModuleType) -> None:
    trials = [{"verdict": v, "target_class": t, "source_classes": s, "seconds": secs}
              for v, t, s, secs in [("backdoor", 4, [1, 2, 3], 10.0), ("backdoor", 4, [1], 20.0),
                                    ("clean", None, [], 30.0), ("error", None, [], 40.0)]]
    for trial in trials:
        trial["score"] = bench.score(trial, TRUTH)
    clean = [{"verdict": v, "target_class": None, "source_classes": [], "seconds": 5.0} for v in ("backdoor", "clean")]
    for trial in clean:
        trial["score"] = bench.score(trial, None)
    summary = bench.summarize(trials + clean)
    assert summary == {"attacks": 4, "detected": 2, "wrong_target": 0, "right_sources": 1,
                       "mean_jaccard": pytest.approx((1 + 1 / 3) / 2), "clean_trials": 2, "false_positives": 1,
                       "errors": 1, "mean_seconds": pytest.approx(110 / 6)}


def test_zoo_models_leave_out_attacks_that_did_not_take_and_follow_the_subset(bench: ModuleType,
                                                                              tmp_path: Path) -> None:
    models = [{"name": "cnn-solid1-s0", "attack_took": True}, {"name": "cnn-blend1-s0", "attack_took": False},
              {"name": "mlp-clean-s0", "attack_took": True}]
    (tmp_path / "manifest.json").write_text(json.dumps({"models": models}))
    chosen, not_taken = bench.zoo_models([tmp_path], ["cnn-*"])
    assert [m["name"] for m in chosen] == ["cnn-solid1-s0"] and chosen[0]["zoo"] == tmp_path.name
    assert chosen[0]["folder"] == str(tmp_path / "cnn-solid1-s0") and not_taken == [f"{tmp_path.name}/cnn-blend1-s0"]


def test_separation_counts_attacks_above_every_clean_trial_with_the_true_target_smallest(bench: ModuleType) -> None:
    truths = {("z", "clean-a"): None, ("z", "clean-b"): None,
              ("z", "far"): {"target_class": 0}, ("z", "near"): {"target_class": 1},
              ("z", "other"): {"target_class": 2}}

    def trial(model: str, norms: list[float]) -> dict:
        return {"zoo": "z", "model": model, "verdict": "clean", "pattern_norms": norms}
    trials = [trial("clean-a", [4.0, 5.0, 6.0, 7.0]), trial("clean-b", [5.0, 6.0, 6.5, 7.0]),
              trial("far", [1.0, 6.0, 6.5, 7.0]),          # target 0 smallest, ratio 6: above both clean trials
              trial("near", [5.0, 4.5, 6.0, 7.0]),         # target 1 smallest, ratio 1.11: below clean-a's 1.25
              trial("other", [1.0, 6.0, 6.5, 7.0]),        # an outlier, but not at the true target 2
              {"zoo": "z", "model": "far", "verdict": "error", "pattern_norms": []}]
    out = bench.separation(trials, truths)
    assert out is not None and set(out) == set(bench.SEPARATION_STATISTICS) | {"smallest norm at the true target"}
    assert out["ratio of the two smallest norms"] == {"detected": 1, "attacks": 3, "clean_trials": 2}
    assert out["smallest norm at the true target"]["detected"] == 2
    assert all(cell["detected"] <= 1 for name, cell in out.items() if name in bench.SEPARATION_STATISTICS)
    assert bench.separation([t for t in trials if t["model"].startswith("clean")], truths) is None


def test_a_cached_trial_without_the_norms_is_run_again(bench: ModuleType, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "clean.npz"
    data.write_bytes(b"x")
    model = {"zoo": "z", "name": "m", "folder": str(tmp_path), "clean_images": "clean.npz", "model": "model.onnx",
             "sha256": "0" * 64}
    config = ScanConfig()
    key = f"{'0' * 16}-lred-{bench.config_key(config, bench.file_sha256_of(data))}"
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / f"{key}.json").write_text(json.dumps({"verdict": "clean"}))

    class Boom(Exception):
        pass

    def scan(*args: object) -> None:
        raise Boom

    import scanner.pipeline
    monkeypatch.setattr(scanner.pipeline, "scan", scan)
    with pytest.raises(Boom):
        bench.run_trial(model, "lred", config, tmp_path / "results")
    (tmp_path / "results" / f"{key}.json").write_text(json.dumps({"verdict": "clean", "pattern_norms": [1.0]}))
    assert bench.run_trial(model, "lred", config, tmp_path / "results")["pattern_norms"] == [1.0]


def test_settings_are_read_as_their_config_fields_types_and_reach_every_method(bench: ModuleType) -> None:
    settings = bench.parse_settings(["patch_shift=4", "pi=0.8", "cuda_graphs=false"])
    assert settings == {"patch_shift": 4, "pi": 0.8, "cuda_graphs": False}
    config = bench.resolve_method("lred-patch", 8, None, {"patch_shift": 4})(1)
    assert (config.method, config.patch_shift, config.seed) == ("lred-patch", 4, 1)
    assert isinstance(bench.resolve_method("lred", 8, None, {"patch_shift": 4}), str)   # refused by the config
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        bench.parse_settings(["no_such_field=1"])
