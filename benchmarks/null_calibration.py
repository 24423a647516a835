"""How often the order-statistic test flags models with no special class, with either p-value.

Draws K statistics r_t i.i.d. from one Gamma (so no class stands out and every detection is
a false one), runs the test of Sec. 3.2 on the norms 1/r_t exactly as a scan does
(``scanner.detection.detect``), and prints the fraction of draws whose paper p-value and
calibrated p-value fall below each alpha, with the null quantiles of the paper's log10 p.

    python benchmarks/null_calibration.py [--draws 1000] [--shapes 3 20 100] [--classes 10] [--seed 0]

A test at level alpha should flag a fraction alpha; the binomial standard error of the
printed rates is sqrt(alpha (1 - alpha) / draws) (0.007 at alpha = 0.05 and 1000 draws).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from scanner.detection import detect

ALPHAS = (0.01, 0.05, 0.1)


def rates(shape: float, classes: int, draws: int, seed: int) -> tuple[dict, dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    results = [detect(1.0 / rng.gamma(shape, 1.0 / shape, size=classes), 0.05) for _ in range(draws)]
    paper = np.array([r.paper_log_p_value for r in results])
    calibrated = np.array([r.calibrated_log_p_value for r in results])
    return ({a: float(np.mean(paper < math.log(a))) for a in ALPHAS},
            {a: float(np.mean(calibrated < math.log(a))) for a in ALPHAS}, paper / math.log(10.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--shapes", type=float, nargs="+", default=[3.0, 20.0, 100.0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    header = " | ".join(f"paper < {a:g} | calibrated < {a:g}" for a in ALPHAS)
    print(f"K = {args.classes}, {args.draws} draws per shape (Gamma null, no special class)\n")
    print(f"| Gamma shape | {header} | log10 paper p: 1% / 5% / 10% quantile | s |")
    print("|---" * (2 + 2 * len(ALPHAS) + 1) + "|")
    for shape in args.shapes:
        started = time.perf_counter()
        paper, calibrated, log10_paper = rates(shape, args.classes, args.draws, args.seed)
        cells = " | ".join(f"{paper[a]:.3f} | {calibrated[a]:.3f}" for a in ALPHAS)
        quantiles = " / ".join(f"{np.quantile(log10_paper, q):.2f}" for q in ALPHAS)
        print(f"| {shape:g} | {cells} | {quantiles} | {time.perf_counter() - started:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
