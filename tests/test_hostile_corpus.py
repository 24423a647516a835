"""Every case of the hostile corpus (tests/hostile_corpus.py) through the real CLI: exit status 2,
a one-line error naming the problem, its error class in the JSON report, no traceback and no
"internal error"."""
import json

import pytest
from click.testing import CliRunner

from scanner import errors as errors_module
from scanner.cli import main
from tests.hostile_corpus import CASES
from tests.schemas import validate_scan_report


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case_fails_closed_with_a_one_line_error(name, tmp_path):
    case = CASES[name](tmp_path)
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["scan", str(case.model), "--data", str(case.data), "-q",
                                       "--json", str(report), *case.options])
    errors = [line for line in result.output.splitlines() if line.startswith("lred: error:")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and case.message in errors[0], result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    written = validate_scan_report(json.loads(report.read_text()))
    assert written["verdict"] == "error"
    assert issubclass(getattr(errors_module, written["error_type"]), case.error), written["error_type"]
