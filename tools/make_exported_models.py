"""Build the exporter fixtures under tests/fixtures/exported/ (committed; CI needs no exporter).

Each framework is built in an environment that has it (they do not install side by side);
the manifest is merged, so the builders can run one after the other:

    pip install scikit-learn skl2onnx          && python tools/make_exported_models.py sklearn
    pip install onnxscript                     && python tools/make_exported_models.py torch
    pip install tensorflow-cpu keras tf2onnx   && python tools/make_exported_models.py keras
    pip install jax flax jax2onnx              && python tools/make_exported_models.py jax

(keep torch and torchvision at the project's versions: install with a constraints file.)
``--no-backdoor`` skips the trained backdoored models (minutes of training on one thread),
``--backdoor-only`` builds only them.

manifest.json lists every fixture under "models" with its exporter, versions, opsets, input
(name, shape, layout), score output, the graph habits it exercises, and the onnxruntime scores
of ten reference images of the clean set; backdoored models add the attack, the clean test
accuracy and the attack success rate, both measured with onnxruntime on the exported file.
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for the tools package

from tools.fixture_builders.common import CLEAN_SET, DATA_DIR, OUT, fashion_mnist

BUILDERS = {"sklearn": "tools.fixture_builders.sklearn_mlp", "torch": "tools.fixture_builders.torch_cnn",
            "keras": "tools.fixture_builders.keras_cnn", "jax": "tools.fixture_builders.jax_cnn"}


def merge_manifest(path: Path, entries: list[dict]) -> dict:
    """The manifest with ``entries`` replacing those of the same file name (others kept, sorted by file)."""
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    models = {m["file"]: m for m in manifest.get("models", [])}
    models.update({e["file"]: e for e in entries})
    return {"generated_by": "tools/make_exported_models.py", "clean_set": CLEAN_SET,
            "models": [models[name] for name in sorted(models)]}


def dump_manifest(manifest: dict) -> str:
    """JSON with one line per list of numbers (a row of scores), so the file stays readable."""
    text = json.dumps(manifest, indent=1)
    return re.sub(r"\[\s+([-+0-9.e,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frameworks", nargs="+", choices=sorted(BUILDERS))
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-backdoor", action="store_true", help="Only the conversion-matrix fixtures.")
    parser.add_argument("--backdoor-only", action="store_true", help="Only the trained backdoored fixtures.")
    args = parser.parse_args()
    import numpy as np

    args.out.mkdir(parents=True, exist_ok=True)
    data = fashion_mnist(args.data_dir)
    if not (args.out / CLEAN_SET).is_file():
        from tools.fixture_builders.sklearn_mlp import write_clean_set
        write_clean_set(args.out, data)
    with np.load(args.out / CLEAN_SET) as clean:
        clean_images = clean["x"]
    for framework in args.frameworks:
        builder = importlib.import_module(BUILDERS[framework])
        if args.backdoor_only:
            if not hasattr(builder, "build_backdoored"):
                continue
            entries = builder.build_backdoored(args.out, data, clean_images)
        else:
            entries = builder.build(args.out, data, clean_images, backdoor=not args.no_backdoor)
        manifest = merge_manifest(args.out / "manifest.json", entries)
        (args.out / "manifest.json").write_text(dump_manifest(manifest))
        for entry in entries:
            figures = ""
            if "attack" in entry:
                figures = (f"  accuracy {entry['clean_test_accuracy']:.4f}  ASR {entry['attack_success_rate']:.4f}  "
                           f"trained in {entry['training_seconds']} s")
            print(f"{entry['file']:44s} {entry['bytes'] / 1024:7.1f} KiB  opsets {entry['opsets']}{figures}")


if __name__ == "__main__":
    main()
