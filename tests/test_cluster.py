"""Scans on a Dask cluster (scanner/cluster.py): one model split over workers gives the local
report; many models map to one result each; a worker killed mid-task loses no result.

The cluster is ``distributed.LocalCluster`` with 2 worker processes of 1 thread each (CI has
2 cores); the tests that need it are skipped when dask[distributed] is not installed.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from scanner.cli import main
from scanner.cluster import split_jobs
from scanner.cluster_files import data_files, model_files
from scanner.config import ScanConfig
from scanner.errors import EXIT_BACKDOOR, EXIT_ERROR, ClusterError
from scanner.pipeline import scan
from tests import synthetic
from tests.conftest import FAST_OPTIONS

needs_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="dask[distributed] is not installed (pip install -e '.[cluster]')")
FAST = ScanConfig(images_per_class=4, delta=0.01)          # tests/conftest.py FAST_OPTIONS
# the killed-worker test needs a task that lasts long enough to be killed in the middle
SLOW_SYNTHETIC = ScanConfig(fixed_step=True, delta=3e-3)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        yield client


def _same_estimates(a, b) -> None:
    """Identical reports where the method decides: verdict, p-values, target, sources, every norm."""
    assert (a.report.verdict, a.report.target_class, a.report.source_classes) == \
           (b.report.verdict, b.report.target_class, b.report.source_classes)
    assert (a.report.p_value, a.report.paper_log10_p_value, a.report.calibrated_log10_p_value) == \
           (b.report.p_value, b.report.paper_log10_p_value, b.report.calibrated_log10_p_value)
    for x, y in zip(a.report.classes, b.report.classes, strict=True):
        assert (x.pattern_norm, x.statistic, x.iterations, x.misclassification, x.verified_fraction) == \
               (y.pattern_norm, y.statistic, y.iterations, y.misclassification, y.verified_fraction)
    for key in b.patterns:
        assert np.array_equal(a.patterns[key], b.patterns[key])


def _cases(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """Synthetic models sharing one clean set: backdoored to 2, backdoored to 4, clean."""
    cases = {}
    for name, target in (("to2", 2), ("to4", 4), ("clean", None)):
        (tmp_path / name).mkdir()
        cases[name] = synthetic.write_case(tmp_path / name, backdoor_target=target)
    return cases


# -- without a cluster ------------------------------------------------------------------------

def test_jobs_are_dealt_into_non_empty_groups_covering_each_job_once():
    groups = split_jobs(10, 3)
    assert groups == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert split_jobs(2, 5) == [[0], [1]]


def test_shipped_files_rebuild_the_clean_folder_and_model_as_they_were(tmp_path, sample_models):
    data = data_files(sample_models / "clean_images").materialize(tmp_path / "data")
    model = model_files(sample_models / "fmnist_cnn_clean.onnx").materialize(tmp_path / "model")
    originals = sorted(p.relative_to(sample_models / "clean_images") for p in
                       (sample_models / "clean_images").rglob("*.png"))
    assert sorted(p.relative_to(data) for p in data.rglob("*.png")) == originals
    assert model.read_bytes() == (sample_models / "fmnist_cnn_clean.onnx").read_bytes()


def test_scheduler_without_dask_is_one_line_and_exit_2(backdoored_case, monkeypatch):
    model, data = backdoored_case
    monkeypatch.setitem(sys.modules, "distributed", None)         # import distributed -> ImportError
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "--scheduler", "tcp://x:8786"])
    assert result.exit_code == EXIT_ERROR
    assert "pip install 'lred[cluster]'" in result.stderr.splitlines()[0]


@needs_dask
def test_an_unreachable_scheduler_is_a_cluster_error():
    from scanner.cluster import connect
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
        connect("tcp://127.0.0.1:9", timeout_seconds=2)


# -- one model split over the workers ----------------------------------------------------------

@needs_dask
@pytest.mark.slow
def test_split_scan_of_the_sample_gives_the_local_report(client, sample_models, tmp_path):
    model, data = sample_models / "fmnist_cnn_backdoored.onnx", sample_models / "clean_images"
    address = client.scheduler_info()["address"]
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), *FAST_OPTIONS,
                                       "--scheduler", address, "--json", str(tmp_path / "split.json")])
    assert result.exit_code == EXIT_BACKDOOR, result.output
    local = scan(model, data, FAST)
    split = json.loads((tmp_path / "split.json").read_text())
    assert (split["verdict"], split["target_class"], split["p_value"]) == \
           (local.report.verdict, local.report.target_class, local.report.p_value)
    assert [c["pattern_norm"] for c in split["classes"]] == [c.pattern_norm for c in local.report.classes]
    assert [c["iterations"] for c in split["classes"]] == [c.iterations for c in local.report.classes]


@needs_dask
def test_split_scan_in_more_groups_than_workers_is_the_local_scan(client, backdoored_case):
    from scanner.cluster import ClusterEstimate
    model, data = backdoored_case
    split = scan(model, data, ScanConfig(), estimate=ClusterEstimate(client, model, data, groups=4))
    _same_estimates(split, scan(model, data, ScanConfig()))


# -- many models -------------------------------------------------------------------------------

@needs_dask
def test_many_models_map_to_one_outcome_each_with_their_own_paths(client, tmp_path):
    from scanner.cluster import scan_models
    cases = _cases(tmp_path)
    data = cases["to2"][1]
    missing = tmp_path / "absent.onnx"
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    paths = [cases[name][0] for name in cases] + [missing, broken]
    results = list(scan_models(client, paths, data, ScanConfig(), in_flight=2))
    assert sorted(str(p) for p, _ in results) == sorted(str(p) for p in paths)
    found = dict(results)
    for name, target in (("to2", 2), ("to4", 4), ("clean", None)):
        outcome = found[cases[name][0]]
        assert outcome.report.model.path == str(cases[name][0])
        assert outcome.report.data.source == str(data)
        assert outcome.report.target_class == target if target is not None else outcome.report.verdict == "clean"
        _same_estimates(outcome, scan(cases[name][0], data, ScanConfig()))
    assert type(found[missing]).__name__ == "ModelError"
    assert type(found[broken]).__name__ == "ModelError" and str(broken) in str(found[broken])


def _kill_a_busy_worker(client, runner: threading.Thread) -> int:
    """Start ``runner`` and SIGKILL the first worker process seen running a task; its pid."""
    client.wait_for_workers(2, timeout=120)          # a worker killed by an earlier test is back
    runner.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and runner.is_alive():
        busy = [address for address, stack in client.call_stack().items() if stack]
        if busy:
            time.sleep(0.5)                           # into the task, not at its first line
            pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.05)
    raise AssertionError("no task was seen running")


@needs_dask
def test_a_worker_killed_mid_task_loses_no_result(client, tmp_path):
    """SIGKILL the worker process running a scan: the scheduler reruns the task on the other
    worker, and every model still gets its one outcome, equal to the local scan's."""
    from scanner.cluster import scan_models
    cases = _cases(tmp_path)
    paths, data = [cases["to2"][0], cases["clean"][0]], cases["to2"][1]
    results: list = []
    runner = threading.Thread(target=lambda: results.extend(scan_models(client, paths, data, SLOW_SYNTHETIC)))
    _kill_a_busy_worker(client, runner)
    runner.join(timeout=600)                         # a bound for a hang: about 20 s on 2 quiet cores
    assert not runner.is_alive()
    assert sorted(str(p) for p, _ in results) == sorted(str(p) for p in paths)
    for path, outcome in results:
        assert not isinstance(outcome, Exception), outcome
        _same_estimates(outcome, scan(path, data, SLOW_SYNTHETIC))


@needs_dask
def test_a_worker_killed_during_a_split_scan_changes_no_estimate(client, backdoored_case):
    from scanner.cluster import ClusterEstimate
    model, data = backdoored_case
    outcomes: list = []
    runner = threading.Thread(target=lambda: outcomes.append(
        scan(model, data, SLOW_SYNTHETIC, estimate=ClusterEstimate(client, model, data))))
    _kill_a_busy_worker(client, runner)
    runner.join(timeout=600)
    assert not runner.is_alive() and len(outcomes) == 1
    _same_estimates(outcomes[0], scan(model, data, SLOW_SYNTHETIC))


def test_a_batch_with_scheduler_runs_one_task_per_model_and_writes_the_local_batch_reports(client, tmp_path):
    from click.testing import CliRunner

    from scanner.cli import main
    from tests.conftest import FAST_OPTIONS
    from tests.test_batch import write_vendor

    models, data = write_vendor(tmp_path)
    summaries = {}
    for where, extra in (("local", []), ("cluster", ["--scheduler", client.scheduler.address])):
        out = tmp_path / where
        result = CliRunner().invoke(main, ["scan", str(models), "--data", str(data), "--out", str(out), "--quiet",
                                           "--class-names", "a,b,c,d,e,f", *FAST_OPTIONS, *extra],
                                    catch_exceptions=False)
        assert result.exit_code == 2, result.output          # the worst: broken.onnx has no verdict
        summaries[where] = json.loads((out / "summary.json").read_text())
    keys = ("model", "verdict", "target_class", "source_classes", "log10_p_value", "outcome", "error_type")
    local, cluster = ([{k: row[k] for k in keys} for row in summaries[w]["models"]] for w in ("local", "cluster"))
    assert cluster == local and [row["verdict"] for row in local] == ["backdoor", "clean", "error"]
    for row in summaries["cluster"]["models"][:2]:
        report = json.loads((tmp_path / "cluster" / row["report"]).read_text())
        twin = json.loads((tmp_path / "local" / row["report"]).read_text())
        assert [c["pattern_norm"] for c in report["classes"]] == [c["pattern_norm"] for c in twin["classes"]]
        assert report["model"]["path"] == twin["model"]["path"] and report["class_names"] == list("abcdef")
        assert (tmp_path / "cluster" / row["html"]).is_file()
