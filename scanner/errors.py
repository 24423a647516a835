"""Everything that can stop a scan, as one small tree.

::

    LredError                      exit status 2: the model was not scanned
    ├── ModelError                 the ONNX file cannot be read, checked or understood
    │   └── UnsupportedModelError  valid ONNX, but outside what the scanner handles
    ├── ConversionError            onnx2torch cannot turn the graph into a torch module
    │   ├── UnsupportedOperatorError   an op (type, opset, node) has no converter
    │   └── ConversionMismatchError    the torch module disagrees with onnxruntime
    ├── DataError                  the clean images are missing, malformed or unusable
    ├── ConfigError                a scan parameter is out of range or inconsistent
    ├── EstimationError            a pattern estimation ended at v = 0 (no usable gradient)
    │   └── InconclusiveError      the estimates cannot carry a verdict (scanner/evidence.py)
    ├── ResourceError              the scan ran out of memory (host or GPU)
    │   └── ScanTimeoutError       the scan ran past --timeout
    ├── ClusterError               --scheduler: no Dask, no scheduler or worker, or a worker died
    └── InterruptedScanError       SIGINT or SIGTERM stopped the scan

Every message is one line: what was expected, what was found, what to do.
The CLI prints it and exits with status 2; ``--debug`` shows the traceback.
Status 2 means "not verified clean", never "clean".

The base and the conversion branch (LredError, ModelError, UnsupportedModelError,
ConversionError and its two subclasses, the exit statuses) live in ``converters/errors.py``, a
module with no imports, so that ``converters`` never imports ``scanner``; they are re-exported
here, and ``from scanner.errors import X`` works for every name in the tree.
"""
from __future__ import annotations

from converters.errors import (  # noqa: F401  (re-exported: the lower layer defines them)
    EXIT_BACKDOOR,
    EXIT_CLEAN,
    EXIT_ERROR,
    ConversionError,
    ConversionMismatchError,
    LredError,
    ModelError,
    UnsupportedModelError,
    UnsupportedOperatorError,
)


class DataError(LredError):
    """The clean image set is missing, malformed or unusable for this model."""


class ConfigError(LredError):
    """A scan parameter is out of range or inconsistent with the model."""


class EstimationError(LredError):
    """Pattern estimation could not produce what the detection test needs (a positive ||v_t|| for
    every class)."""


class InconclusiveError(EstimationError):
    """The estimates the verdict would rest on did not converge or are not confirmed by onnxruntime:
    neither "backdoor" nor "clean" can be claimed (scanner/evidence.py says which may be used)."""


class ResourceError(LredError):
    """The scan ran out of host or GPU memory; the message says which knob bounds it."""


class ScanTimeoutError(ResourceError):
    """The scan ran past its time limit (``--timeout``); the message names the step."""


class ClusterError(LredError):
    """``--scheduler``: Dask is not installed, the scheduler or its workers cannot be reached, or
    the cluster lost a task for good (scanner/cluster.py)."""


class InterruptedScanError(LredError):
    """A signal (SIGINT, SIGTERM) stopped the scan before it finished."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (torch raises RuntimeError subclasses for both
    CUDA and CPU allocator failures; Python raises MemoryError)."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":          # torch.cuda.OutOfMemoryError
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
