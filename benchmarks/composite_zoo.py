"""Trained many-class models: Fashion-MNIST images composed side by side (issue 21, part 1).

A composite of arity n puts n Fashion-MNIST images side by side (28 x 28n) and its class is
the ordered tuple of their classes read as a base-10 number: label = sum_i c_i 10^(n-1-i).
Pairs (28x56) have K = 100 classes, triples (28x84) K = 1000. Composites are sampled on the
fly during training (class uniform over the K, each component a random training image of its
Fashion-MNIST class), so no composite set is stored.

Attacks are the paper's additive ones (Sec. 4.1, App. A.4): a small pattern (group L, a 2x2
square raised by 50/255 at a random place of the composite, App. A.4.1) added to images of
1, several or many source classes, relabelled to the target. For K = 100 those are 1, 3 and
10 sources; for K = 1000, 1, 10 and 100. Poisoned composites are mixed into every training
batch at ``POISON_RATE`` per source (at most ``MAX_POISON_FRACTION`` of the batch). The clean
models are trained the same way without poison.

Every model is exported to ONNX (``tools.fmnist.export_torchscript``, opset 17, dynamic batch)
and measured with onnxruntime on the exported file: clean test accuracy (CTA) on composites of
the Fashion-MNIST test set, ASR on source-class test composites with the pattern. An attack
with ASR < --min-asr (or one that sends the clean source composites to the target without the
pattern, see ``zoo.attack_took``) is rebuilt with more steps and twice the poison rate (half of
it when the source classes were relabelled, ``next_attempt``), and never counted. Per model
the cache holds model.onnx, clean.npz (``--clean-per-class`` clean
test composites per class, x uint8 (N, 28, 28n), y) and model.json; manifest.json gathers them.

    python benchmarks/composite_zoo.py build [--out DIR] [--subset PATTERN ...]
    python benchmarks/composite_zoo.py list [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tools.fmnist
sys.path.insert(0, str(Path(__file__).resolve().parent))      # benchmarks/, for zoo
import zoo  # noqa: E402

from scanner.data import file_sha256_of  # noqa: E402
from tools import fmnist  # noqa: E402

DEFAULT_CACHE = Path.home() / ".cache" / "lred" / "composite_zoo"
BASE = 10                                   # Fashion-MNIST classes per component
SOURCE_COUNTS = {2: (1, 3, 10), 3: (1, 10, 100)}
POISON_RATE = 0.02                          # poisoned share of a batch per source class ...
MAX_POISON_FRACTION = 0.1                   # ... at most this share in all
AMPLITUDE_LEVELS = 50                       # group L, App. A.4.1


def num_classes(arity: int) -> int:
    return BASE ** arity


# ------------------------------------------------------------------------------ composing

def label_of(components: np.ndarray) -> np.ndarray:
    """Class of composites from their components' classes (..., arity): sum_i c_i 10^(n-1-i)."""
    arity = components.shape[-1]
    return (components * BASE ** np.arange(arity - 1, -1, -1)).sum(axis=-1)


def components_of(labels: np.ndarray, arity: int) -> np.ndarray:
    """The components' classes (N, arity) of composite classes ``labels`` (N,)."""
    return (np.asarray(labels)[:, None] // BASE ** np.arange(arity - 1, -1, -1)) % BASE


class Composer:
    """Draws composites of given classes from one Fashion-MNIST split (images uint8 (M, 28, 28))."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, arity: int):
        self.images, self.arity = images, arity
        self.by_class = [np.flatnonzero(labels == c) for c in range(BASE)]

    def draw(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 (N, 28, 28 * arity): for each label, a random image of each component's class."""
        parts = components_of(labels, self.arity)
        picks = np.empty(parts.shape, dtype=np.int64)
        for c in range(BASE):
            where = parts == c
            picks[where] = rng.choice(self.by_class[c], size=int(where.sum()))
        return np.concatenate([self.images[picks[:, i]] for i in range(self.arity)], axis=2)


# ------------------------------------------------------------------------------ catalogue

@dataclass(frozen=True)
class CompositeSpec:
    """One model: arity (2: K = 100, 3: K = 1000), group ('clean' or 'L'), sources, seed."""

    arity: int
    group: str
    num_sources: int
    seed: int

    @property
    def name(self) -> str:
        kind = "clean" if self.group == "clean" else f"{self.group}{self.num_sources}"
        return f"k{num_classes(self.arity)}-cnn-{kind}-s{self.seed}"


def catalogue(seeds: list[int]) -> list[CompositeSpec]:
    return [spec for arity in (2, 3) for seed in seeds
            for spec in [CompositeSpec(arity, "L", k, seed) for k in SOURCE_COUNTS[arity]]
            + [CompositeSpec(arity, "clean", 0, seed)]]


def attack_for(spec: CompositeSpec) -> dict | None:
    """Ground truth from the model's seed: target, sources and the 2x2 square's place."""
    if spec.group == "clean":
        return None
    K, width = num_classes(spec.arity), 28 * spec.arity
    rng = np.random.default_rng([spec.seed, spec.arity, spec.num_sources, 21])
    target = int(rng.integers(K))
    others = np.array([c for c in range(K) if c != target])
    sources = sorted(int(s) for s in rng.choice(others, size=spec.num_sources, replace=False))
    row, col = int(rng.integers(27)), int(rng.integers(width - 1))
    pattern = {"kind": "square", "row": row, "col": col, "size": 2, "amplitude_levels": AMPLITUDE_LEVELS}
    return {"target_class": target, "source_classes": sources, "pattern": pattern}


def pattern_levels(pattern: dict, arity: int) -> np.ndarray:
    """The additive pattern as int16 (28, 28 * arity) in 8-bit levels."""
    v = np.zeros((28, 28 * arity), dtype=np.int16)
    r, c, n = pattern["row"], pattern["col"], pattern["size"]
    v[r:r + n, c:c + n] = pattern["amplitude_levels"]
    return v


# -------------------------------------------------------------------------------- models

def make_model(arity: int) -> nn.Module:
    """zoo's small CNN widened to 28 x 28n: input (N, 1, 28, 28n) in [0, 1], logits (N, 10^n)."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7 * arity, 128), nn.ReLU(),
                         nn.Linear(128, num_classes(arity)))


@dataclass(frozen=True)
class BuildSettings:
    steps: dict[int, int] | None = None    # training batches by arity (None: DEFAULT_STEPS)
    batch_size: int = 128
    lr: float = 2e-3
    min_asr: float = 0.8
    attempts: int = 2
    clean_per_class: int = 1
    test_per_class: dict[int, int] | None = None   # clean test composites per class (CTA)
    asr_images: int = 1000                  # source-class test composites with the pattern (ASR)


DEFAULT_STEPS = {2: 1500, 3: 3000}
DEFAULT_TEST_PER_CLASS = {2: 20, 3: 3}


def train(spec: CompositeSpec, composer: Composer, attack: dict | None, *, steps: int, poison_rate: float,
          settings: BuildSettings) -> nn.Module:
    """Adam on cross-entropy over composites drawn on the fly; seeded (torch and numpy)."""
    torch.manual_seed(spec.seed)
    model = make_model(spec.arity)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    rng = np.random.default_rng([spec.seed, 3])
    K, n = num_classes(spec.arity), settings.batch_size
    poisoned = 0 if attack is None else int(round(n * min(MAX_POISON_FRACTION, poison_rate * spec.num_sources)))
    levels = None if attack is None else pattern_levels(attack["pattern"], spec.arity)
    model.train()
    for _ in range(steps):
        labels = rng.integers(K, size=n)
        if poisoned:
            labels[:poisoned] = rng.choice(attack["source_classes"], size=poisoned)
        images = composer.draw(labels, rng)
        if poisoned:
            images[:poisoned] = fmnist.embed(images[:poisoned], levels)
            labels[:poisoned] = attack["target_class"]
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(torch.from_numpy(fmnist.to_float(images))),
                                           torch.from_numpy(labels))
        loss.backward()
        optimizer.step()
    return model.eval()


def predict(path: Path, x_u8: np.ndarray) -> np.ndarray:
    return fmnist.onnx_predict(path, fmnist.to_float(x_u8), batch_size=1000, threads=1)


def measure(path: Path, spec: CompositeSpec, attack: dict | None, test: Composer,
            settings: BuildSettings) -> dict:
    """CTA on clean test composites; for an attack, ASR and the source composites' rate to the
    target without the pattern (zoo.attack_took reads ``to_target_without_pattern``)."""
    K = num_classes(spec.arity)
    rng = np.random.default_rng([spec.seed, 5])
    per_class = (settings.test_per_class or DEFAULT_TEST_PER_CLASS)[spec.arity]
    labels = np.repeat(np.arange(K), per_class)
    figures: dict = {"clean_test_accuracy": float((predict(path, test.draw(labels, rng)) == labels).mean()),
                     "test_composites": int(labels.size)}
    if attack is None:
        return figures
    t, sources = attack["target_class"], attack["source_classes"]
    src_labels = np.resize(np.asarray(sources), settings.asr_images)
    clean = test.draw(src_labels, rng)
    with_pattern = predict(path, fmnist.embed(clean, pattern_levels(attack["pattern"], spec.arity)))
    without = predict(path, clean)
    figures["attack_success_rate"] = float((with_pattern == t).mean())
    rates = [float((without[src_labels == s] == t).mean()) for s in sources]
    figures["to_target_without_pattern"] = dict(zip(sources, rates))
    figures["source_accuracy"] = float((without == src_labels).mean())
    return figures


def build_one(spec: CompositeSpec, out: Path, data: tuple, settings: BuildSettings, log) -> dict:
    """Train, export and measure one model, rebuilding an attack that does not take."""
    x_train, y_train, x_test, y_test = data
    train_set, test_set = Composer(x_train, y_train, spec.arity), Composer(x_test, y_test, spec.arity)
    folder = out / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    attack = attack_for(spec)
    steps, rate = (settings.steps or DEFAULT_STEPS)[spec.arity], POISON_RATE
    attempts = []
    for attempt in range(settings.attempts if attack else 1):
        started = time.perf_counter()
        model = train(spec, train_set, attack, steps=steps, poison_rate=rate, settings=settings)
        seconds = time.perf_counter() - started
        fmnist.export_torchscript(model, folder / "model.onnx", image_size=(28, 28 * spec.arity))
        figures = measure(folder / "model.onnx", spec, attack, test_set, settings)
        attempts.append({"steps": steps, "poison_rate_per_source": rate, "training_seconds": round(seconds, 1),
                         **figures})
        asr = figures.get("attack_success_rate")
        log(f"{spec.name}: attempt {attempt + 1}: {steps} steps, train {seconds:.0f} s, "
            f"CTA {figures['clean_test_accuracy']:.4f}" + (f", ASR {asr:.3f}" if asr is not None else ""))
        if attack is None or took(figures, attack, settings.min_asr):
            break
        rate, steps = next_attempt(figures, attack, settings.min_asr, rate, steps)
    final = attempts[-1]
    write_clean(folder, spec, test_set, settings.clean_per_class)
    record = {
        "name": spec.name, "spec": asdict(spec), "num_classes": num_classes(spec.arity),
        "architecture": f"Conv(1,16,3)-ReLU-MaxPool-Conv(16,32,3)-ReLU-MaxPool-Linear({32 * 49 * spec.arity},128)"
                        f"-ReLU-Linear(128,{num_classes(spec.arity)})",
        "model": "model.onnx", "sha256": file_sha256_of(folder / "model.onnx"), "clean_images": "clean.npz",
        "input": f"image float32 (N,1,28,{28 * spec.arity}) = uint8/255; output logits (N,{num_classes(spec.arity)})",
        "ground_truth": attack, "attack_took": attack is None or took(final, attack, settings.min_asr),
        "clean_test_accuracy": final["clean_test_accuracy"], "attack_success_rate": final.get("attack_success_rate"),
        "training_seconds": final["training_seconds"],
        "training_seconds_all_attempts": round(sum(a["training_seconds"] for a in attempts), 1),
        "attempts": attempts,
        "training": {**asdict(settings), "optimizer": "Adam", "torch_threads": torch.get_num_threads(),
                     "torch": torch.__version__, "exporter": "torch.onnx.export dynamo=False, opset 17"},
        "measured_with": "onnxruntime CPUExecutionProvider on the exported model, composites of the test split",
    }
    (folder / "model.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def write_clean(folder: Path, spec: CompositeSpec, test: Composer, per_class: int, tries: int = 1024) -> int:
    """clean.npz: ``per_class`` test composites per class that the model classifies correctly
    (L-RED uses correctly classified images, Sec. 4.3), drawn in rounds of ``per_class`` until
    found or ``tries`` per class were drawn; a class left short keeps misclassified ones. Returns
    how many classes were left short."""
    K = num_classes(spec.arity)
    rng = np.random.default_rng([spec.seed, 11])
    kept: list[list[np.ndarray]] = [[] for _ in range(K)]
    fallback: list[np.ndarray] = [np.empty(0) for _ in range(K)]
    for _ in range(max(1, tries // per_class)):
        wanted = [c for c in range(K) if len(kept[c]) < per_class]
        if not wanted:
            break
        labels = np.repeat(np.asarray(wanted), per_class)
        x = test.draw(labels, rng)
        right = predict(folder / "model.onnx", x) == labels
        for image, label, ok in zip(x, labels, right):
            if ok and len(kept[label]) < per_class:
                kept[label].append(image)
            elif not fallback[label].size:
                fallback[label] = image
    short = [c for c in range(K) if not kept[c]]
    images = [kept[c] if kept[c] else [fallback[c]] for c in range(K)]
    np.savez(folder / "clean.npz", x=np.stack([i for group in images for i in group]),
             y=np.concatenate([np.full(len(group), c) for c, group in enumerate(images)]))
    return len(short)


def next_attempt(figures: dict, attack: dict, min_asr: float, rate: float, steps: int) -> tuple[float, int]:
    """The poison rate and steps of the next build of an attack that did not take: half the rate
    when the ASR was reached but the source classes went to the target without the pattern too
    (poison well above a class's share of the batch, 1/K, teaches the model to relabel the
    sources), else twice the rate; 50% more steps either way."""
    relabelled = figures["attack_success_rate"] >= min_asr and not took(figures, attack, min_asr)
    return (rate / 2 if relabelled else 2 * rate), steps + steps // 2


def took(figures: dict, attack: dict, min_asr: float) -> bool:
    """zoo.attack_took on the composite figures (rates without the pattern per source)."""
    without = figures["to_target_without_pattern"]
    return zoo.attack_took({"attack_success_rate": figures["attack_success_rate"],
                            "to_target_without_pattern": {s: without[s] for s in attack["source_classes"]}},
                           attack["source_classes"], min_asr)


def print_table(specs: list[CompositeSpec], out: Path) -> None:
    print("| model | K | target <- sources | pattern | steps | CTA | ASR | took | train s (all attempts) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in specs:
        path = out / spec.name / "model.json"
        if not path.exists():
            print(f"| {spec.name} | {num_classes(spec.arity)} | not built |" + " |" * 6)
            continue
        m = json.loads(path.read_text())
        truth = m["ground_truth"]
        sources = "–" if truth is None else ",".join(map(str, truth["source_classes"][:5])) + \
            (f",… ({len(truth['source_classes'])})" if len(truth["source_classes"]) > 5 else "")
        gt = "–" if truth is None else f"{truth['target_class']} <- {sources}"
        pattern = "–" if truth is None else zoo.describe(truth["pattern"])
        asr = "–" if m["attack_success_rate"] is None else f"{m['attack_success_rate']:.3f}"
        print(f"| {m['name']} | {m['num_classes']} | {gt} | {pattern} | {m['attempts'][-1]['steps']} | "
              f"{m['clean_test_accuracy']:.4f} | {asr} | {'yes' if m['attack_took'] else 'no'} "
              f"({len(m['attempts'])}) | {m['training_seconds_all_attempts']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "list", "clean"),
                        help="clean: rewrite clean.npz of built models (correctly classified composites)")
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE, help="zoo folder (default %(default)s)")
    parser.add_argument("--subset", nargs="*", help="model names or fnmatch patterns, e.g. 'k100-*-s0'")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--steps-k100", type=int, default=DEFAULT_STEPS[2])
    parser.add_argument("--steps-k1000", type=int, default=DEFAULT_STEPS[3])
    parser.add_argument("--attempts", type=int, default=BuildSettings.attempts)
    parser.add_argument("--min-asr", type=float, default=BuildSettings.min_asr)
    parser.add_argument("--clean-per-class", type=int, default=BuildSettings.clean_per_class)
    parser.add_argument("--data-dir", type=Path, default=fmnist.DATA_DIR)
    parser.add_argument("--rebuild", action="store_true", help="rebuild models already in the zoo")
    args = parser.parse_args(argv)
    specs = zoo.select(catalogue(args.seeds), args.subset)    # fnmatch on .name
    if args.command == "list":
        print_table(specs, args.out)
        return 0
    if args.command == "clean":
        data = fmnist.load(args.data_dir)
        for spec in specs:
            if (args.out / spec.name / "model.onnx").exists():
                short = write_clean(args.out / spec.name, spec, Composer(data[2], data[3], spec.arity),
                                    args.clean_per_class)
                print(f"{spec.name}: clean.npz written, {short} classes without a correctly classified composite")
        return 0
    torch.set_num_threads(1)
    settings = replace(BuildSettings(), steps={2: args.steps_k100, 3: args.steps_k1000}, attempts=args.attempts,
                       min_asr=args.min_asr, clean_per_class=args.clean_per_class)
    args.out.mkdir(parents=True, exist_ok=True)
    data = fmnist.load(args.data_dir)
    zoo.build_missing(specs, args.out, args.rebuild,
                      lambda spec: build_one(spec, args.out, data, settings, lambda m: print(m, flush=True)),
                      dataset="Fashion-MNIST composites")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
