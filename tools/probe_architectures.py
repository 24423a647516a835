"""Export common classifier architectures with torch's two exporters and run ``lred inspect``'s
checks (conversion, parity with onnxruntime on random inputs, input gradients) on every file.

Weights are random (seeded) and inputs 3x32x32, so this checks conversion only, not detection.
Prints a Markdown table; exit status 1 if any exported file is not ready to scan.

    python tools/probe_architectures.py [--exporters torchscript dynamo] [--only resnet18 ...]

Exporters: dynamo (its default opset, batch 1) and the TorchScript variants of
``TORCHSCRIPT_OPTIONS`` (``torchscript``: opset 17).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository root, for the tests package
from scanner.inspection import inspect_model  # noqa: E402
from tests.test_architecture_exports import AssortedOps, TinyViT  # noqa: E402


def architectures() -> dict:
    import torchvision.models as tv
    return {
        "resnet18": lambda: tv.resnet18(num_classes=10),
        "mobilenet_v3_small": lambda: tv.mobilenet_v3_small(num_classes=10),
        "efficientnet_b0": lambda: tv.efficientnet_b0(num_classes=10),
        "shufflenet_v2_x0_5": lambda: tv.shufflenet_v2_x0_5(num_classes=10),
        "squeezenet1_1": lambda: tv.squeezenet1_1(num_classes=10),
        "densenet121": lambda: tv.densenet121(num_classes=10),
        "convnext_tiny": lambda: tv.convnext_tiny(num_classes=10),
        "vgg11_bn": lambda: tv.vgg11_bn(num_classes=10),
        "regnet_y_400mf": lambda: tv.regnet_y_400mf(num_classes=10),
        "mobilenet_v2": lambda: tv.mobilenet_v2(num_classes=10),
        "googlenet": lambda: tv.googlenet(num_classes=10, aux_logits=False, init_weights=True),
        "mnasnet0_5": lambda: tv.mnasnet0_5(num_classes=10),
        "resnext50_32x4d": lambda: tv.resnext50_32x4d(num_classes=10),
        "swin_t": lambda: tv.swin_t(num_classes=10),
        "tiny_vit": TinyViT,
        "assorted_ops": AssortedOps,
    }


# the TorchScript exporter's habits: opset, constant folding off, weights also listed as inputs
TORCHSCRIPT_OPTIONS = {
    "torchscript": dict(opset_version=17),
    "torchscript11": dict(opset_version=11),
    "torchscript13_unfolded": dict(opset_version=13, do_constant_folding=False),
    "torchscript14_weights_as_inputs": dict(opset_version=14, keep_initializers_as_inputs=True),
}


@contextlib.contextmanager
def _silenced():
    """Exporter chatter off, including what torch's C++ side prints to file descriptors 1 and 2."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def export(module: torch.nn.Module, exporter: str, path: Path) -> None:
    x = torch.rand(1, 3, 32, 32)
    with _silenced():
        if exporter.startswith("torchscript"):
            torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
                              **TORCHSCRIPT_OPTIONS[exporter])
        else:   # batch fixed at 1, the habit of an export without dynamic_shapes
            torch.onnx.export(module, (x,), dynamo=True, input_names=["input"], output_names=["logits"]).save(str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporters", nargs="+", default=["torchscript", "dynamo"])
    parser.add_argument("--only", nargs="+", default=None)
    args = parser.parse_args()
    print("| architecture | exporter | opset | graph passes | max abs diff / tolerance | result | s |")
    print("|---|---|---|---|---|---|---|")
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        for name, build in architectures().items():
            if args.only and name not in args.only:
                continue
            for exporter in args.exporters:
                torch.manual_seed(0)
                path = Path(folder) / f"{name}_{exporter}.onnx"
                started = time.perf_counter()
                try:
                    export(build().eval(), exporter, path)
                except Exception as exc:  # noqa: BLE001 - an exporter failure is a row, not a crash
                    print(f"| {name} | {exporter} | – | – | – | export failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:80]} | – |")
                    continue
                report = inspect_model(str(path))
                failures += not report.ok
                diff = (f"{report.max_abs_difference:.2g} / {report.tolerance:.2g}"
                        if report.max_abs_difference is not None else "–")
                print(f"| {name} | {exporter} | {report.opsets.get('ai.onnx', report.opsets.get('', '?'))} | "
                      f"{'; '.join(report.conversion_passes) or '–'} | {diff} | "
                      f"{'ready to scan' if report.ok else report.problem} | {time.perf_counter() - started:.0f} |",
                      flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
