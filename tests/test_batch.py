"""``lred scan MODELS_OR_FOLDERS... --out DIR`` and ``scanner.scan_many``: per-model reports, the
summary (JSON, CSV, HTML), a failing model that does not stop the batch, the worst exit status,
resume, and the usage errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from scanner import ScanConfig, scan_many
from scanner.batch import report_stem
from scanner.cli import main
from scanner.summary import BatchRow
from tests import synthetic
from tests.conftest import FAST_OPTIONS
from tests.schemas import validate, validate_scan_report

FAST = ScanConfig(images_per_class=4, delta=0.01)


def write_vendor(root: Path) -> tuple[Path, Path]:
    """A vendor folder: a/model.onnx (backdoored), b/model.onnx (clean: same name, other folder),
    broken.onnx (not ONNX), notes.txt (not a model); and the clean data both models share."""
    for sub, target in (("a", 2), ("b", None)):
        (root / "models" / sub).mkdir(parents=True)
        onnx.save(synthetic.linear_classifier(6, backdoor_target=target), root / "models" / sub / "model.onnx")
    (root / "models" / "broken.onnx").write_bytes(b"\x00garbage")
    (root / "models" / "notes.txt").write_text("not a model")
    x, y = synthetic.clean_images(6, 4)
    np.savez(root / "clean.npz", x=x, y=y)
    return root / "models", root / "clean.npz"


def run_batch(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["scan", *map(str, args)], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One batch run over the vendor folder: (root, out, exit code, stdout, summary dict)."""
    root = tmp_path_factory.mktemp("vendor")
    models, data = write_vendor(root)
    out = root / "out"
    code, output = run_batch(models, "--data", data, "--out", out, *FAST_OPTIONS)
    return root, out, code, output, json.loads((out / "summary.json").read_text())


def test_a_folder_is_scanned_into_one_report_per_model_and_the_broken_one_is_recorded(batch):
    root, out, code, output, summary = batch
    assert code == 2, output                      # the worst: broken.onnx has no verdict
    validate("batch_summary", summary)
    rows = {Path(r["model"]).relative_to(root / "models").as_posix(): r for r in summary["models"]}
    assert sorted(rows) == ["a/model.onnx", "b/model.onnx", "broken.onnx"]    # notes.txt is no model
    assert [r["model"] for r in summary["models"]] == sorted(r["model"] for r in summary["models"])
    assert summary["complete"] and summary["models_total"] == summary["models_done"] == 3
    assert summary["counts"] == {"backdoor": 1, "clean": 1, "error": 1} and summary["exit_status"] == 2
    backdoored, clean, broken = rows["a/model.onnx"], rows["b/model.onnx"], rows["broken.onnx"]
    assert backdoored["verdict"] == "backdoor" and backdoored["target_class"] == 2 and backdoored["exit_status"] == 1
    assert backdoored["source_classes"] and 2 not in backdoored["source_classes"] and backdoored["p_value"] < 0.05
    assert clean["verdict"] == "clean" and clean["exit_status"] == 0 and clean["p_value"] >= 0.05
    assert broken["verdict"] == "error" and broken["outcome"] == "failed" and "\n" not in broken["error"]
    assert broken["error_type"] == "ModelError"
    # same file name in two folders: two reports, each a valid scan report of its own model
    assert backdoored["name"] != clean["name"] and all(r["name"].startswith("model-") for r in (backdoored, clean))
    for row in (backdoored, clean):
        report = validate_scan_report(json.loads((out / row["report"]).read_text()))
        assert report["verdict"] == row["verdict"] and report["config_digest"] == row["config_digest"]
        assert report["model"]["sha256"] == row["model_sha256"] and report["audit"]["data_sha256"] == row["data_sha256"]
    error = validate_scan_report(json.loads((out / broken["report"]).read_text()))
    assert error["verdict"] == "error" and error["error"] == broken["error"]


def test_the_summary_csv_and_index_html_have_one_row_per_model(batch):
    root, out, _, output, summary = batch
    with open(out / "summary.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert [line["model"] for line in lines] == [r["model"] for r in summary["models"]]
    assert [line["verdict"] for line in lines] == [r["verdict"] for r in summary["models"]]
    backdoored = next(r for r in summary["models"] if r["verdict"] == "backdoor")
    assert next(line for line in lines if line["verdict"] == "backdoor")["source_classes"] == ";".join(
        map(str, backdoored["source_classes"]))
    page = (out / "index.html").read_text()
    assert page.count("<tr class=") == 3 and "<script" not in page and "http" not in page.replace(
        "http-equiv", "")
    for row in summary["models"]:
        assert f'href="{row["report"]}"' in page
    broken = next(r for r in summary["models"] if r["verdict"] == "error")
    assert "not scanned" in page and broken["error"].split(":")[0] in page
    # stdout: one line per model, then where the summary is
    assert output.count("\n") == 4 and "BACKDOOR (target 2" in output and "NOT scanned" in output


def test_a_second_run_reuses_every_finished_report_and_retries_the_failed_one(batch):
    root, out, _, _, first = batch
    before = {r["name"]: (out / r["report"]).stat().st_mtime_ns for r in first["models"] if r["verdict"] != "error"}
    code, _ = run_batch(root / "models", "--data", root / "clean.npz", "--out", out, *FAST_OPTIONS)
    summary = validate("batch_summary", json.loads((out / "summary.json").read_text()))
    assert code == 2
    assert [r["outcome"] for r in summary["models"]] == ["reused", "reused", "failed"]
    assert summary["reused"] == 2
    assert all((out / f"{name}.json").stat().st_mtime_ns == t for name, t in before.items())   # not rewritten
    for old, new in zip(first["models"], summary["models"]):
        assert (old["verdict"], old["target_class"], old["p_value"]) == (new["verdict"], new["target_class"],
                                                                         new["p_value"])


def test_another_configuration_scans_again(tmp_path):
    root = tmp_path
    write_vendor(root)
    (root / "models" / "broken.onnx").unlink()
    model = root / "models" / "a" / "model.onnx"
    out = tmp_path / "out"
    assert run_batch(model, "--data", root / "clean.npz", "--out", out, *FAST_OPTIONS)[0] == 1
    code, _ = run_batch(model, "--data", root / "clean.npz", "--out", out, *FAST_OPTIONS, "--alpha", "0.01")
    summary = json.loads((out / "summary.json").read_text())
    assert code == 1 and summary["models"][0]["outcome"] == "scanned" and summary["models"][0]["alpha"] == 0.01


def test_the_worst_exit_status_is_0_when_every_model_is_clean(tmp_path):
    onnx.save(synthetic.linear_classifier(6, backdoor_target=None), tmp_path / "clean.onnx")
    x, y = synthetic.clean_images(6, 4)
    np.savez(tmp_path / "c.npz", x=x, y=y)
    seen: list[tuple[str, object]] = []

    class Recorder:
        def batch_started(self, total: int) -> None: seen.append(("batch", total))
        def model_started(self, index: int, total: int, model: str) -> None: seen.append(("model", index))
        def model_progress(self, stage: str, message: str) -> None: seen.append(("stage", stage))
        def model_finished(self, index: int, total: int, row: BatchRow) -> None: seen.append(("done", row.verdict))
        def batch_finished(self, rows) -> None: seen.append(("end", len(rows)))

    result = scan_many([tmp_path / "clean.onnx"], tmp_path / "c.npz", FAST, tmp_path / "out", progress=Recorder())
    assert result.exit_status == 0 and [r.verdict for r in result.rows] == ["clean"]
    assert seen[:2] == [("batch", 1), ("model", 1)] and seen[-2:] == [("done", "clean"), ("end", 1)]
    assert {s for kind, s in seen if kind == "stage"} >= {"load", "convert", "estimate", "verify", "test"}


def test_an_interrupted_batch_leaves_a_valid_summary_and_a_rerun_scans_only_what_is_missing(tmp_path):
    models, data = write_vendor(tmp_path)
    (models / "broken.onnx").unlink()
    out = tmp_path / "out"

    class StopAtTheSecond:                          # fault injection: Ctrl-C as the second model starts
        def batch_started(self, total: int) -> None: ...
        def model_started(self, index: int, total: int, model: str) -> None:
            if index == 2:
                raise KeyboardInterrupt
        def model_progress(self, stage: str, message: str) -> None: ...
        def model_finished(self, index: int, total: int, row: BatchRow) -> None: ...
        def batch_finished(self, rows) -> None: ...

    with pytest.raises(KeyboardInterrupt):
        scan_many([models], data, FAST, out, progress=StopAtTheSecond())
    summary = validate("batch_summary", json.loads((out / "summary.json").read_text()))
    assert not summary["complete"] and summary["models_total"] == 2 and summary["models_done"] == 1
    assert summary["models"][0]["verdict"] == "backdoor"
    again = scan_many([models], data, FAST, out)
    assert [r.outcome for r in again.rows] == ["reused", "scanned"] and again.exit_status == 1
    assert json.loads((out / "summary.json").read_text())["complete"]


def test_the_html_hook_writes_one_page_per_scanned_model(tmp_path):
    model, data = synthetic.write_case(tmp_path, backdoor_target=None)
    written = []

    def writer(outcome, path: Path) -> None:
        written.append(outcome.report.verdict)
        path.write_text("<html></html>")

    result = scan_many([model], data, FAST, tmp_path / "out", html_writer=writer)
    assert written == ["clean"] and result.rows[0].html == f"{result.rows[0].name}.html"
    assert (tmp_path / "out" / result.rows[0].html).is_file()
    assert f'href="{result.rows[0].html}"' in (tmp_path / "out" / "index.html").read_text()


@pytest.mark.parametrize("args", [["models/a/model.onnx", "models/b/model.onnx"], ["models"]],
                         ids=["two files", "a folder"])
def test_several_models_or_a_folder_without_out_is_a_usage_error(tmp_path, args):
    _, data = write_vendor(tmp_path)
    result = CliRunner().invoke(main, ["scan", *[str(tmp_path / a) for a in args], "--data", str(data)])
    assert result.exit_code == 2 and "--out" in result.output


def test_json_and_save_patterns_are_refused_in_a_batch(tmp_path):
    models, data = write_vendor(tmp_path)
    for extra in (["--json", str(tmp_path / "r.json")], ["--save-patterns", str(tmp_path / "p")]):
        result = CliRunner().invoke(main, ["scan", str(models), "--data", str(data), "--out", str(tmp_path / "o"),
                                           *extra])
        assert result.exit_code == 2 and extra[0] in result.output


def test_a_folder_without_models_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    np.savez(tmp_path / "c.npz", x=np.zeros((6, 8, 8), np.uint8), y=np.arange(6))
    code, output = run_batch(tmp_path / "empty", "--data", tmp_path / "c.npz", "--out", tmp_path / "o", "-q")
    assert code == 2 and "no .onnx file" in output


def test_report_names_are_safe_and_distinct():
    names = {report_stem(p) for p in ("a/model.onnx", "b/model.onnx", "../../etc/passwd.onnx",
                                       "x/\u202eevil\x1b[31m.onnx", "x/.hidden.onnx", "x/.onnx")}
    assert len(names) == 6
    for name in names:
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name) and not name.startswith(".")
    assert report_stem("a/model.onnx") == report_stem("./a/model.onnx")       # one file, one name


def test_sigint_during_a_batch_exits_2_and_the_rerun_scans_only_the_missing_model(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    models, data = write_vendor(tmp_path)
    (models / "broken.onnx").unlink()
    out = tmp_path / "out"
    args = [sys.executable, "-m", "scanner", "scan", str(models), "--data", str(data), "--out", str(out),
            "-n", "4", "--delta", "0.0003", "--fixed-step"]     # seconds per model: the SIGINT lands inside one
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:                    # plain lines: stderr is a pipe, not a terminal
        if line.startswith("lred [2/2] [estimate]"):     # the first model is done, the second one's estimation runs
            process.send_signal(signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr and "SIGINT" in stderr
    summary = validate("batch_summary", json.loads((out / "summary.json").read_text()))
    assert not summary["complete"] and [r["verdict"] for r in summary["models"]] == ["backdoor"]
    second = out / f"{report_stem(models / 'b' / 'model.onnx')}.json"
    assert json.loads(second.read_text())["error_type"] == "Unfinished"     # never an older report
    rerun = subprocess.run(args + ["-q"], cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 1, rerun.stderr
    summary = validate("batch_summary", json.loads((out / "summary.json").read_text()))
    assert [r["outcome"] for r in summary["models"]] == ["reused", "scanned"] and summary["complete"]


def test_find_models_sorts_follows_links_once_and_reports_unreadable_folders(tmp_path, monkeypatch):
    import os

    from scanner.batch import find_models
    root = tmp_path / "vendor"
    (root / "b").mkdir(parents=True)
    (root / "a").mkdir()
    for name in ("b/z.onnx", "b/y.ONNX", "a/x.onnx", "top.onnx"):
        (root / name).write_bytes(b"")
    (root / "a" / "loop").symlink_to(root)                    # a link back up: entered once
    (root / "a" / "dangling.onnx").symlink_to(tmp_path / "absent.onnx")
    (root / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    models, problems = find_models([root, root / "top.onnx"])   # top.onnx twice: once
    assert [m.relative_to(root).as_posix() for m in models] == [
        "a/dangling.onnx", "a/x.onnx", "b/y.ONNX", "b/z.onnx", "top.onnx"]
    assert problems == [(root / "locked", "cannot read folder: Permission denied")]


def test_progress_is_bars_on_a_terminal_lines_elsewhere_and_nothing_when_quiet():
    import io

    from scanner.batch import SilentProgress
    from scanner.progress import BarProgress, LineProgress, batch_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    row = BatchRow(model="m\x1b[2J.onnx", name="m-0", report="m-0.json", html=None, outcome="scanned",
                   verdict="backdoor", exit_status=1, target_class=2, source_classes=(0,), log10_p_value=-5.0,
                   seconds=1.5)
    assert isinstance(batch_progress(True, Terminal()), SilentProgress)
    for stream, kind in ((Terminal(), BarProgress), (io.StringIO(), LineProgress)):
        progress = batch_progress(False, stream)
        assert isinstance(progress, kind)
        progress.batch_started(1)
        progress.model_started(1, 1, row.model)
        progress.model_progress("estimate", "lred: 6 pattern estimations on 24 images (cpu)")
        progress.model_progress("estimate", "iteration 10: 3/6 estimations done")
        progress.model_finished(1, 1, row)
        progress.batch_finished([row])
        text = stream.getvalue()
        assert "BACKDOOR (target 2, sources 0), p 10^-5.00, 1.5 s" in text and "\x1b[2J" not in text
        if kind is BarProgress:
            assert "models" in text and "1/1" in text and "est" in text     # tqdm's bars
        else:
            assert text.splitlines()[1] == "lred [1/1] m\\x1b[2J.onnx"


def test_the_configuration_digest_counts_every_field_but_the_timeout():
    from scanner.resume import config_digest
    base = config_digest(FAST)
    assert config_digest(ScanConfig(images_per_class=4, delta=0.01, timeout=60)) == base
    for change in ({"alpha": 0.01}, {"seed": 1}, {"mean": (0.5,)}, {"input_scale": 255.0}, {"device": "cpu"},
                   {"adaptive_step": 0.05}, {"layout": "nchw"}):
        assert config_digest(ScanConfig(images_per_class=4, delta=0.01, **change)) != base, change


def test_a_report_is_reused_only_for_the_same_model_data_and_configuration(batch):
    from scanner.resume import reusable_report
    _, out, _, _, summary = batch
    row = next(r for r in summary["models"] if r["verdict"] == "backdoor")
    path, same = out / row["report"], (row["model_sha256"], row["data_sha256"], row["config_digest"])
    assert reusable_report(path, *same)["verdict"] == "backdoor"
    for i in range(3):
        changed = list(same)
        changed[i] = "0" * 64
        assert reusable_report(path, *changed) is None
    broken = next(r for r in summary["models"] if r["verdict"] == "error")
    assert reusable_report(out / broken["report"], *same) is None        # error reports are retried


def test_each_scanned_model_gets_its_html_report(batch):
    root, out, code, output, summary = batch
    for row in summary["models"]:
        if row["verdict"] in ("backdoor", "clean"):
            page = (out / row["html"]).read_text()
            assert "<html" in page.lower() and row["verdict"] in page.lower()
        else:
            assert row["html"] is None


def test_a_rerun_writes_one_sarif_log_over_the_batch_and_the_summary_on_stdout(batch, tmp_path):
    from tests.test_sarif import validate_sarif

    root, out, code, output, summary = batch
    sarif = tmp_path / "batch.sarif"
    rerun = CliRunner().invoke(main, ["scan", str(root / "models"), "--data", str(root / "clean.npz"), "--out",
                                      str(out), "--sarif", str(sarif), "--format", "json", "--quiet", *FAST_OPTIONS],
                               catch_exceptions=False)
    assert rerun.exit_code == 2
    printed = json.loads(rerun.stdout)
    validate("batch_summary", printed)
    assert [r["outcome"] for r in printed["models"] if r["verdict"] != "error"] == ["reused", "reused"]
    results = validate_sarif(json.loads(sarif.read_text()))["runs"][0]["results"]
    assert sorted(r["level"] for r in results) == ["error", "none", "note"], results   # backdoor, clean, broken
    [backdoor] = [r for r in results if r["level"] == "error"]
    assert backdoor["properties"]["target_class"] == 2 and "target class 2" in backdoor["message"]["text"]


def test_html_and_json_files_are_for_one_model(tmp_path):
    root = tmp_path
    models, data = write_vendor(root)
    for option in ("--html", "--json"):
        code, output = run_batch(models, "--data", data, "--out", root / "out", option, root / "x")
        assert code == 2 and option in output
