"""Sampled sources (scanner/sampled.py): each iteration's gradient from source classes drawn by w."""
import json

import numpy as np
import pytest
import torch

from scanner.config import ScanConfig
from scanner.engine import Engine
from scanner.errors import ConfigError
from scanner.estimation import STATUS_CONVERGED
from scanner.lred import PassCount, Sampling, estimate_patterns, lred_jobs
from scanner.pipeline import scan
from scanner.reporters import report_to_dict
from scanner.sampled import SampledEngine
from scanner.sarif import render_scan_sarif
from scanner.schedules import FixedStep
from tests import synthetic
from tests.schemas import validate_scan_report

K = 14
SETTINGS = dict(pi=0.9, max_iterations=400, schedule=FixedStep(0.02), batch_images=4096)


@pytest.fixture(scope="module")
def problem():
    return synthetic.estimation_problem(K, 2, backdoor_target=5)


def sampled(problem, draws=3, refresh_every=5, seed=0, jobs=None, counts=None):
    classifier, x, y = problem
    return estimate_patterns(classifier, x, y, K, jobs=jobs, counts=counts,
                             sampling=Sampling(draws, refresh_every, seed), **SETTINGS)


def test_the_draws_weight_each_class_so_that_the_gradient_estimate_is_unbiased(problem):
    classifier, x, y = problem
    engine = SampledEngine(classifier, x, y, K, lred_jobs(K)[:2], draws=3, refresh_every=1000, seed=0, **SETTINGS)
    w = torch.zeros(K)
    w[[0, 1, 2, 3]] = torch.tensor([0.7, 0.2, 0.07, 0.03])
    engine.w[1] = w                                      # job 1 (target 1) keeps w_1 = 0
    engine.w[1, 1] = 0.0
    engine.w[1] /= engine.w[1].sum()
    total = torch.zeros(K, dtype=torch.float64)
    rounds = 4000
    for _ in range(rounds):
        units = engine.lay_out([1])
        drawn = set(units[0].source_of_slot[0].tolist()) - {K}
        scale = engine.source_scale[1]
        assert set(torch.nonzero(scale).flatten().tolist()) == drawn
        total += (engine.w[1] * scale).double()
    # E[w_s * count_s / (M w_s)] = w_s: the weighted sum over the draws estimates sum_s w_s g_s
    np.testing.assert_allclose((total / rounds).numpy(), engine.w[1].double().numpy(), atol=0.02)


def test_a_sampled_scan_converges_near_the_full_methods_patterns_with_fewer_passes(problem):
    classifier, x, y = problem
    full_counts, sampled_counts = PassCount(), PassCount()
    full = estimate_patterns(classifier, x, y, K, counts=full_counts, **SETTINGS)
    drawn = sampled(problem, counts=sampled_counts)
    assert all(e.status == STATUS_CONVERGED for e in drawn)
    full_norms = np.array([e.pattern_norm for e in full])
    drawn_norms = np.array([e.pattern_norm for e in drawn])
    assert int(np.argmin(drawn_norms)) == int(np.argmin(full_norms)) == 5      # the backdoor target
    np.testing.assert_allclose(drawn_norms, full_norms, rtol=0.35)
    assert sampled_counts.image_passes < 0.5 * full_counts.image_passes
    # every converged estimate reaches pi on its q_st measured over every source at its pattern
    for e in drawn:
        assert e.fraction >= SETTINGS["pi"]
        assert float((e.source_weights * e.misclassification).sum()) == pytest.approx(e.fraction, abs=1e-6)


def test_a_jobs_path_depends_on_the_seed_and_its_target_alone(problem):
    every = sampled(problem, seed=3)
    alone = sampled(problem, seed=3, jobs=[lred_jobs(K)[7]])
    np.testing.assert_allclose(alone[0].pattern, every[7].pattern, atol=1e-6)
    other_seed = sampled(problem, seed=4, jobs=[lred_jobs(K)[7]])
    assert not np.allclose(other_seed[0].pattern, every[7].pattern)


def test_line_5_is_checked_on_fractions_measured_over_every_source(problem):
    classifier, x, y = problem
    engine = SampledEngine(classifier, x, y, K, lred_jobs(K)[:1], draws=2, refresh_every=1000, seed=0, **SETTINGS)
    engine.q_known[0] = 1.0                   # remembered: every source already goes to the target
    engine.q_known[0, 0] = 0.0
    engine.iterations[0] = 1
    q, fraction = engine._check_crossing(0, engine.q_known[0].clone(), 1.0)   # at v = 0 nothing does
    assert fraction < SETTINGS["pi"] and float(q.sum()) < 1.0
    assert 0 not in engine.results and engine.rejections[0] == 0


def test_bisection_over_the_changed_classes_finds_the_full_bisections_point(problem):
    classifier, x, y = problem
    engine = SampledEngine(classifier, x, y, K, lred_jobs(K)[:1], draws=2, refresh_every=1000, seed=0,
                           **{**SETTINGS, "schedule": FixedStep(0.02, crossing_resolution=1e-3)})
    full = estimate_patterns(classifier, x, y, K, jobs=lred_jobs(K)[:1], **SETTINGS)[0]
    end = torch.as_tensor(full.pattern)                # a point where Q_0 >= pi: a long last step to it
    engine.v[0], engine.last_step[0] = end, end
    engine.q_before[0] = engine.fractions_at(0, torch.zeros_like(end))
    engine.q_known[0] = engine.fractions_at(0, end)
    changed = int((engine.q_known[0] != engine.q_before[0]).sum())
    assert 0 < changed < K - 1
    reached = lambda q: float((engine.w[0] * q).sum()) >= SETTINGS["pi"]      # noqa: E731
    before = engine.forward_images
    partial = engine.bisect_last_step(0, float(end.norm()), reached)
    partial_rows = engine.forward_images - before
    before = engine.forward_images
    whole = Engine.bisect_last_step(engine, 0, float(end.norm()), reached)
    assert partial[:2] == whole[:2]
    torch.testing.assert_close(partial[2], whole[2])
    assert partial_rows < engine.forward_images - before


def test_sampling_is_a_config_choice_for_lred_only_and_off_where_the_draws_cover_every_source():
    assert ScanConfig().sampling_for(100) is None
    assert ScanConfig(sample_sources=8).sampling_for(100) == Sampling(8, 10, 0)
    assert ScanConfig(sample_sources=9, seed=2).sampling_for(10) is None       # 9 draws, 9 sources: the full method
    for bad in (dict(sample_sources=-1), dict(sample_sources=4, refresh_every=0),
                dict(sample_sources=4, scalable=True), dict(sample_sources=4, method="ured"),
                dict(sample_sources=4, exact=True)):
        with pytest.raises(ConfigError):
            ScanConfig(**bad)


def test_a_scan_with_sampled_sources_finds_the_target_and_says_it_departs_from_algorithm_1(tmp_path):
    k = 24
    model, data = synthetic.write_case(tmp_path, num_classes=k, per_class=1, backdoor_target=5)
    full = scan(model, data, ScanConfig(images_per_class=1)).report
    report = scan(model, data, ScanConfig(images_per_class=1, sample_sources=4, refresh_every=5)).report
    assert report.verdict == full.verdict == "backdoor" and report.target_class == full.target_class == 5
    assert len(report.classes) == k                       # every target's path, as the full method
    notes = [w for w in report.warnings if w.startswith("sampled sources:")]
    assert len(notes) == 1 and "4 of the 23 source classes" in notes[0] and "every 5 iterations" in notes[0]
    assert not [w for w in full.warnings if w.startswith("sampled sources:")]
    assert report.config["sample_sources"] == 4 and report.config_digest != full.config_digest
    assert 0 < report.image_passes < full.image_passes
    validate_scan_report(json.loads(json.dumps(report_to_dict(report))))
    sarif = json.loads(render_scan_sarif(report))          # the warning reaches a CI gate's log too
    assert notes[0] in sarif["runs"][0]["results"][0]["properties"]["warnings"]


def test_the_side_by_side_benchmark_names_the_sampled_modes_by_draws_and_refresh():
    from tests.benchmark_scripts import load_benchmark

    module = load_benchmark("scalable", "scalable_benchmark")
    assert module.mode_options("full") == [] and module.mode_options("scalable") == ["--scalable"]
    assert module.mode_options("sampled8") == ["--sample-sources", "8"]
    assert module.mode_options("sampled4-r25") == ["--sample-sources", "4", "--refresh-every", "25"]
    for bad in ("sampled", "sampledx", "sampled4-r", "fast"):
        with pytest.raises(Exception, match="unknown mode"):
            module.mode_options(bad)
