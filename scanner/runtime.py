"""onnxruntime on the original, unconverted graph: the reference every verdict is checked against."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .deadline import NO_DEADLINE, Deadline
from .errors import ModelError, ResourceError
from .model import LoadedModel


@dataclass(frozen=True)
class RuntimeInfo:
    """What onnxruntime actually ran on (``session.get_providers()``, not what it claims to offer)."""

    providers: tuple[str, ...]
    fixed_batch: int | None


class ReferenceClassifier:
    """Class scores of the original ONNX graph, evaluated in chunks with onnxruntime.

    A graph whose batch dimension is fixed (typically 1) is evaluated that many images at a time.
    """

    def __init__(self, model: LoadedModel, use_cuda: bool = False, chunk_images: int = 1024,
                 deadline: Deadline = NO_DEADLINE):
        """``deadline``: every ``session.run`` is cut off when the scan's time limit passes
        (ScanTimeoutError), so a graph that would run for days (a Loop of 10^12 trips) cannot hang it."""
        self.deadline = deadline
        options = ort.SessionOptions()
        options.log_severity_level = 4       # onnxruntime's own (coloured) error lines: we report the error
        providers = ["CPUExecutionProvider"]
        if use_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self._session = ort.InferenceSession(model.proto.SerializeToString(), options,
                                                 providers=providers)
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from exc
        self._input = model.input_name
        self._output = model.output_name
        self._dtype = np.dtype(model.input_dtype)
        fixed = model.input_shape[0]
        self._chunk = fixed if fixed is not None else chunk_images
        self.info = RuntimeInfo(providers=tuple(self._session.get_providers()), fixed_batch=fixed)

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """Scores (n, K) as float64 for model inputs ``inputs`` (n, *input shape)."""
        out = []
        n = inputs.shape[0]
        for start in range(0, n, self._chunk):
            batch = inputs[start:start + self._chunk].astype(self._dtype, copy=False)
            pad = 0
            if self.info.fixed_batch is not None and batch.shape[0] < self._chunk:
                pad = self._chunk - batch.shape[0]
                batch = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)])
            with self.deadline.run_options("onnxruntime evaluated the model") as run_options:
                try:
                    result = self._session.run([self._output], {self._input: batch}, run_options)[0]
                except Exception as exc:
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    if "alloc" in first.lower() or "out of memory" in first.lower():
                        raise ResourceError(f"onnxruntime ran out of memory evaluating {batch.shape[0]} images "
                                            f"at once ({first}); lower --batch-images") from exc
                    raise ModelError(f"onnxruntime failed to run the model: {first}") from exc
            result = np.asarray(result, dtype=np.float64)
            if result.ndim != 2 or result.shape[0] != batch.shape[0]:
                raise ModelError(f"output {self._output!r} has shape {result.shape} for a batch of "
                                 f"{batch.shape[0]}; expected (batch, classes)")
            out.append(result[:result.shape[0] - pad])
        scores = np.concatenate(out) if out else np.zeros((0, 0))
        finite = np.isfinite(scores).all(axis=1)
        if not finite.all():
            raise ModelError(f"the model gives non-finite class scores (NaN or inf) on {int((~finite).sum())} of "
                             f"{n} inputs: its weights, or the input transform (--mean, --std, --input-scale), "
                             "produce them; refusing to scan")
        return scores

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Predicted class (argmax of the scores) for each input."""
        return self.scores(inputs).argmax(axis=1)
