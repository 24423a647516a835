"""The method registry (scanner/methods.py) is what the CLI, the config and the pipeline read."""
import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

from scanner import methods, scan
from scanner.cli import main
from scanner.config import ScanConfig
from scanner.errors import ConfigError
from scanner.estimation import PatternEstimate


def _method_option():
    return next(p for p in main.commands["scan"].params if p.name == "method")


def test_the_cli_offers_exactly_the_registered_methods_with_their_descriptions():
    option = _method_option()
    assert tuple(option.type.choices) == tuple(methods.METHODS) == ("lred", "ured", "pred", "lred-patch", "nc")
    assert option.default == "lred"
    assert option.help == ("lred (the paper's method), ured (weights fixed uniform), "
                           "pred (every class pair), lred-patch (patch triggers: mask and pattern, the paper's "
                           "weights) or nc (Neural Cleanse: patch triggers, all other classes as sources, MAD "
                           "anomaly index).")


def test_an_unregistered_method_is_a_usage_error_with_exit_2(backdoored_case):
    model, data = backdoored_case
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "--method", "nred"])
    assert result.exit_code == 2
    assert "'nred' is not one of 'lred', 'ured', 'pred', 'lred-patch', 'nc'" in result.output


def test_the_config_accepts_registered_names_and_refuses_others():
    for name in methods.METHODS:
        assert ScanConfig(method=name).method == name
    with pytest.raises(ConfigError, match="method must be one of lred, ured, pred, lred-patch, nc"):
        ScanConfig(method="nred")


def test_a_new_registry_entry_is_a_valid_config_method(monkeypatch):
    monkeypatch.setattr(methods, "METHOD_NAMES", methods.METHOD_NAMES + ("single",))
    assert ScanConfig(method="single").method == "single"


@pytest.mark.parametrize("name, jobs_per_k, adapting", [("lred", 1, True), ("ured", 1, False),
                                                         ("pred", 4, False)])
def test_each_method_builds_its_jobs(name, jobs_per_k, adapting):
    jobs = methods.method_named(name).jobs(5)
    assert len(jobs) == 5 * jobs_per_k                       # K jobs, or K(K-1) pairs
    assert all(job.adapt_weights is adapting for job in jobs)
    assert all(job.target not in job.sources for job in jobs)
    assert methods.method_named(name).adapts_weights is adapting
    assert methods.method_named(name).reports_pairs is (name == "pred")


def test_lred_names_sources_by_weight_and_the_pair_methods_by_job():
    weights = np.array([0.0, 0.05, 0.9, 0.05])
    suspect = PatternEstimate(0, np.zeros(3), 5, np.zeros(4), weights, 0.95, "converged", sources=(1, 2, 3))
    assert methods.method_named("lred").source_classes(suspect, 0.9) == (2,)
    assert methods.method_named("ured").source_classes(suspect, 0.9) == (1, 2, 3)
    pair = dataclasses.replace(suspect, sources=(3,))
    assert methods.method_named("pred").source_classes(pair, 0.9) == (3,)


def test_a_method_registered_once_is_scanned_by_the_pipeline(backdoored_case, monkeypatch):
    """One registry entry is a new method: U-RED's jobs, its own source naming, no pairs."""
    named = []

    def first_source(suspect, pi):
        named.append((suspect.target_class, pi))
        return suspect.sources[:1]

    entry = methods.Method("first-source", "test entry", methods.method_named("ured").jobs, first_source,
                           adapts_weights=False, reports_pairs=False)
    monkeypatch.setitem(methods.METHODS, entry.name, entry)
    monkeypatch.setattr(methods, "METHOD_NAMES", tuple(methods.METHODS))
    model, data = backdoored_case
    outcome = scan(model, data, ScanConfig(method="first-source", images_per_class=4, delta=0.01))
    report = outcome.report
    assert report.method == "first-source" and report.pairs == ()
    assert report.target_class == 2 and report.source_classes == (0,) and named == [(2, 0.9)]
    assert all(len(set(c.source_weights) - {0.0}) == 1 for c in report.classes)   # w stayed uniform
    assert sorted(outcome.patterns) == list(range(6))
