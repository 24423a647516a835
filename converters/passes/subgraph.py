"""Graph pass: keep only the path from the image input to the class-score output.

Side outputs (a label output, ZipMap dictionaries, auxiliary heads) are not needed for the
gradient and are often not convertible; dropping them leaves a one-input, one-output graph.
"""
from __future__ import annotations

import onnx
from onnx import utils as onnx_utils

from ..errors import ModelError


def keep_score_path(model: onnx.ModelProto, input_name: str, output_name: str) -> onnx.ModelProto:
    """The subgraph that computes ``output_name`` from ``input_name`` (plus initializers)."""
    if len(model.graph.output) == 1 and model.graph.output[0].name == output_name:
        return model
    try:
        extracted = onnx_utils.Extractor(model).extract_model([input_name], [output_name])
    except Exception as exc:
        raise ModelError(f"cannot isolate output {output_name!r} from input {input_name!r}: "
                         f"{str(exc).splitlines()[0]}") from exc
    extracted.ir_version = model.ir_version
    del extracted.opset_import[:]
    extracted.opset_import.extend(model.opset_import)
    extracted.producer_name = model.producer_name
    extracted.producer_version = model.producer_version
    return extracted
