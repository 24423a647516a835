"""The scalable mode (scanner/scalable.py), the image-pass count and the composite zoo's labels."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from scanner import detection, scalable
from scanner.cli import main
from scanner.config import ScanConfig
from scanner.engine import Engine
from scanner.errors import ConfigError
from scanner.lred import PassCount, estimate_patterns, exact_passes, lred_jobs
from scanner.pipeline import scan
from scanner.reporters import report_to_dict
from scanner.schedules import FixedStep
from tests import synthetic
from tests.schemas import validate_scan_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import composite_zoo  # noqa: E402

K = 14
SETTINGS = dict(pi=0.9, max_iterations=400, schedule=FixedStep(0.02), batch_images=4096)


@pytest.fixture(scope="module")
def problem():
    return synthetic.estimation_problem(K, 1, backdoor_target=5)


# ---------------------------------------------------------------------------- composites

def test_composite_labels_read_the_components_as_a_base_ten_number():
    parts = np.array([[3, 7], [0, 9], [9, 0]])
    assert composite_zoo.label_of(parts).tolist() == [37, 9, 90]
    labels = np.arange(1000)
    np.testing.assert_array_equal(composite_zoo.label_of(composite_zoo.components_of(labels, 3)), labels)
    assert composite_zoo.components_of(np.array([472]), 3).tolist() == [[4, 7, 2]]


def test_composer_puts_an_image_of_each_component_class_side_by_side():
    images = np.repeat(np.arange(10, dtype=np.uint8)[:, None, None], 3, axis=0) * np.ones((1, 28, 28), np.uint8)
    labels = np.repeat(np.arange(10), 3)          # every image is filled with its class number
    composer = composite_zoo.Composer(images, labels, 3)
    x = composer.draw(np.array([472, 5]), np.random.default_rng(0))
    assert x.shape == (2, 28, 84) and x.dtype == np.uint8
    assert [int(x[0, 0, 28 * i]) for i in range(3)] == [4, 7, 2]
    assert [int(x[1, 0, 28 * i]) for i in range(3)] == [0, 0, 5]


def test_composite_attack_ground_truth_is_seeded_and_excludes_the_target():
    spec = composite_zoo.CompositeSpec(3, "L", 100, 0)
    a, b = composite_zoo.attack_for(spec), composite_zoo.attack_for(spec)
    assert a == b and len(a["source_classes"]) == 100 and a["target_class"] not in a["source_classes"]
    levels = composite_zoo.pattern_levels(a["pattern"], 3)
    assert levels.shape == (28, 84) and int((levels == 50).sum()) == 4
    assert composite_zoo.attack_for(composite_zoo.CompositeSpec(2, "clean", 0, 0)) is None


def test_a_relabelled_attack_is_rebuilt_with_less_poison_and_a_weak_one_with_more():
    attack = {"source_classes": [3, 7]}
    relabelled = {"attack_success_rate": 0.93, "to_target_without_pattern": {3: 0.8, 7: 0.9}}
    weak = {"attack_success_rate": 0.5, "to_target_without_pattern": {3: 0.0, 7: 0.1}}
    assert composite_zoo.next_attempt(relabelled, attack, 0.8, 0.02, 400) == (0.01, 600)
    assert composite_zoo.next_attempt(weak, attack, 0.8, 0.02, 400) == (0.04, 600)


# ---------------------------------------------------------------------------- selection

def test_selection_takes_the_best_scores_and_a_seeded_uniform_null_sample():
    scores = np.array([0.1, 5.0, math.inf, 0.3, 5.0, -1.0, 0.2, 0.0])
    best, drawn = scalable.select_targets(scores, 3, 4, np.random.default_rng(1))
    assert best == (1, 2, 4)                       # inf (reached pi) first, then 5.0 twice
    assert len(drawn) == 4 and len(set(drawn)) == 4 and all(0 <= t < 8 for t in drawn)
    assert scalable.select_targets(scores, 3, 4, np.random.default_rng(1)) == (best, drawn)
    # the null sample is uniform over all K: over many seeds every class is drawn about equally
    hits = np.zeros(8)
    for seed in range(400):
        hits[list(scalable.select_targets(scores, 3, 4, np.random.default_rng(seed))[1])] += 1
    assert hits.min() > 0.7 * 200 and hits.max() < 1.3 * 200


def test_screen_sources_are_all_other_classes_or_a_random_subset():
    assert scalable.screen_jobs(6, 10, np.random.default_rng(0)) == lred_jobs(6)
    jobs = scalable.screen_jobs(30, 4, np.random.default_rng(0))
    assert all(len(j.sources) == 4 and j.target not in j.sources for j in jobs)


def test_subset_null_calibration_matches_the_full_one_when_it_keeps_every_statistic():
    full = detection.null_log_p_values(4.0, 10)
    subset = scalable.null_log_p_values_subset(4.0, 10, 9)
    level = math.log(0.05)
    assert abs(float(np.mean(full < level)) - float(np.mean(subset < level))) < 0.02
    # a smaller null sample makes the nominal level less reliable: more rejections under the null
    assert np.mean(scalable.null_log_p_values_subset(4.0, 1000, 9) < level) > np.mean(subset < level)


def test_scalable_test_fits_the_null_to_the_random_targets_and_uses_k():
    norms = np.array([1.0, 1.1, 0.9, 1.05, 0.2, 0.95])
    targets = [3, 8, 11, 20, 40, 51]
    result = scalable.scalable_test(norms, targets, [3, 8, 11, 51], 100, 0.05)
    assert targets[result.inferred_target] == 40 and result.detected
    shape, scale = detection.fit_null(1.0 / np.array([1.0, 1.1, 0.9, 0.95]))
    assert result.gamma_shape == pytest.approx(shape)
    expected = detection.order_statistic_log_p_value(5.0, shape, scale, 100)
    assert result.paper_log_p_value == pytest.approx(expected)


# ---------------------------------------------------------------------------- engine

def test_image_passes_count_every_row_of_every_iteration(problem):
    classifier, pixels, labels = problem
    counts = PassCount()
    estimates = estimate_patterns(classifier, pixels, labels, K, pi=0.99999, max_iterations=3,
                                  schedule=FixedStep(1e-4), batch_images=50, counts=counts)
    assert all(e.iterations == 3 for e in estimates)
    # three steps, and the pass at the last v that finds tau_max: 4 passes of K (K-1) N rows
    assert counts.image_passes == 4 * K * (K - 1) * 1
    assert counts.forward_images == 0
    assert exact_passes(estimates, labels.tolist()) == (3 * K * (K - 1), 3 * K * (K - 1))


def test_continuing_the_screened_paths_gives_the_full_method_estimates(problem):
    classifier, pixels, labels = problem
    full = estimate_patterns(classifier, pixels, labels, K, **SETTINGS)
    engine = Engine(classifier, pixels, labels, K, lred_jobs(K), **SETTINGS)
    engine.iterate(range(K), rounds=3)
    assert not engine.results
    engine.iterate([2, 5, 9])
    assert sorted(engine.results) == [2, 5, 9]
    for t in (2, 5, 9):
        assert engine.results[t].iterations == full[t].iterations
        np.testing.assert_allclose(engine.results[t].pattern, full[t].pattern, atol=1e-5)


def test_the_screen_ranks_the_planted_target_first(problem):
    classifier, pixels, labels = problem
    outcome = scalable.estimate_scalable(classifier, pixels, labels, K, screen=scalable.ScreenSettings(3, 100, 1, 5),
                                         **SETTINGS)
    assert outcome.candidates == (5,) and outcome.warm_start
    assert int(np.argmax(outcome.scores)) == 5
    assert [e.target_class for e in outcome.estimates] == sorted({5, *outcome.null_targets})


def test_a_screen_on_drawn_sources_restarts_the_selected_targets_with_every_source(problem):
    classifier, pixels, labels = problem
    outcome = scalable.estimate_scalable(classifier, pixels, labels, K, screen=scalable.ScreenSettings(3, 4, 1, 4),
                                         **SETTINGS)
    assert not outcome.warm_start and outcome.screen_sources == 4
    targets = [e.target_class for e in outcome.estimates]
    full = estimate_patterns(classifier, pixels, labels, K, jobs=[lred_jobs(K)[t] for t in targets], **SETTINGS)
    for mine, theirs in zip(outcome.estimates, full):
        assert mine.sources == theirs.sources and mine.iterations == theirs.iterations
        np.testing.assert_allclose(mine.pattern, theirs.pattern, atol=1e-6)


# ---------------------------------------------------------------------------- the scan

def test_scalable_scan_finds_the_planted_target_and_records_its_passes(tmp_path):
    k = 24
    model, data = synthetic.write_case(tmp_path, num_classes=k, per_class=1, backdoor_target=5)
    report = scan(model, data, ScanConfig(images_per_class=1, scalable=True, screen_iterations=3,
                                          screen_candidates=2, screen_null_targets=8)).report
    assert report.verdict == "backdoor" and report.target_class == 5
    assert not [w for w in report.warnings if w.startswith("scalable mode:")]     # a detection stands alone
    record = report.scalable
    assert record is not None and record.warm_start and 5 in record.candidates
    assert {c.target_class for c in report.classes} == {*record.candidates, *record.null_targets}
    # the screen: at most 3 iterations of K (K-1) N rows; then only the selected targets' rows
    assert 0 < record.screen_image_passes <= 3 * k * (k - 1)
    assert record.screen_image_passes < report.image_passes
    longest = max(c.iterations for c in report.classes)
    assert report.image_passes <= record.screen_image_passes + len(report.classes) * (k - 1) * (longest + 1)
    assert report.forward_images >= k     # the screen scores' forward passes at v = 0 and at v_t
    validate_scan_report(json.loads(json.dumps(report_to_dict(report))))


def test_a_clean_verdict_of_the_scalable_mode_says_what_it_rests_on(tmp_path):
    k = 24
    model, data = synthetic.write_case(tmp_path, num_classes=k, per_class=1, backdoor_target=None)
    report = scan(model, data, ScanConfig(images_per_class=1, scalable=True, screen_iterations=2,
                                          screen_sources=6, screen_candidates=1, screen_null_targets=6)).report
    assert report.verdict == "clean"
    caveats = [w for w in report.warnings if w.startswith("scalable mode:")]
    assert len(caveats) == 2 and "scan without --scalable" in caveats[0] and "6 of 23 source" in caveats[1]


def test_scalable_mode_is_checked_and_falls_back_to_the_full_method_for_few_classes():
    with pytest.raises(ConfigError, match="method lred"):
        ScanConfig(scalable=True, method="ured")
    with pytest.raises(ConfigError, match="screen_null_targets"):
        ScanConfig(screen_null_targets=2)
    with pytest.raises(ConfigError, match="screen_iterations"):
        ScanConfig(screen_iterations=0)
    assert not ScanConfig().scalable_for(1000)
    assert not ScanConfig(scalable=True).scalable_for(9) and ScanConfig(scalable=True).scalable_for(10)


def test_cli_refuses_a_null_sample_too_small(tmp_path):
    model, data = synthetic.write_case(tmp_path)
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "--scalable",
                                       "--screen-null-targets", "2"])
    assert result.exit_code == 2 and "screen_null_targets" in result.output
