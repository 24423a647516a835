"""The errors conversion raises: the base of the scanner's error tree and its conversion branch.

This module imports nothing, so both ``converters`` and ``scanner`` can import it; the whole
tree (with the scanner-level errors) is drawn in ``scanner/errors.py``, which re-exports these
classes unchanged. Exit statuses follow ``grep``/``diff``: 0 no backdoor found, 1 backdoor
found, 2 could not scan (not verified clean).
"""
from __future__ import annotations

EXIT_CLEAN = 0
EXIT_BACKDOOR = 1
EXIT_ERROR = 2


class LredError(Exception):
    """Base of every error that means the model could not be scanned."""

    exit_code = EXIT_ERROR


class ModelError(LredError):
    """The ONNX file cannot be read, checked or understood."""


class UnsupportedModelError(ModelError):
    """The ONNX file is valid but outside what the scanner handles."""


class ConversionError(LredError):
    """onnx2torch cannot turn the graph into a differentiable torch module."""


class UnsupportedOperatorError(ConversionError):
    """An operator has no torch converter; the message names op type, opset and node."""


class ConversionMismatchError(ConversionError):
    """The converted torch module disagrees with onnxruntime on the clean images."""
