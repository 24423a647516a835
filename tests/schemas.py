"""Validation of JSON reports against the schemas the package ships (scanner/schemas/)."""
from __future__ import annotations

from typing import Any

import jsonschema

from scanner.reporters import schema


def validate(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """Raise jsonschema.ValidationError unless ``data`` is a valid report ``name``; return ``data``."""
    document = schema(name)
    jsonschema.Draft202012Validator.check_schema(document)
    jsonschema.Draft202012Validator(document, format_checker=jsonschema.FormatChecker()).validate(data)
    return data


def validate_scan_report(data: dict[str, Any]) -> dict[str, Any]:
    """A scan's report: a verdict (scan_report) or, when it could not run, an error_report."""
    return validate("error_report" if data.get("verdict") == "error" else "scan_report", data)
