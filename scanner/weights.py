"""The source weights w of Algorithm 1 (App. A.2): w(0), the update of eqs. (7)-(8), and that
update repeated as Algorithm 1 repeats it over several steps on which no image changes class.

A ``Job`` is one pattern estimation: L-RED, U-RED and P-RED differ only in their jobs' sources
and in whether w adapts (``lred.py``, ``ured.py``, ``pred.py``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .jobs import Job  # noqa: F401  (re-exported: the engine's callers import it from here)


def uniform_weights(num_classes: int, target: int, sources: Sequence[int] | None = None) -> np.ndarray:
    """w(0): uniform over the source classes (all s != t: 1/(K-1)), w_t = 0 (Algorithm 1, line 2)."""
    sources = [s for s in range(num_classes) if s != target] if sources is None else list(sources)
    w = np.zeros(num_classes)
    w[sources] = 1.0 / len(sources)
    return w


def update_weights(q: torch.Tensor, fraction: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """Eqs. (7)-(8) for a batch of jobs: w_s = softmax_s(q_st / T) with T = -log Q_t.

    ``q`` (k, K) misclassification fractions, ``fraction`` (k,) Q_t, ``excluded`` (k, K) true
    at s = t (and at any class outside the job's sources). Rows with Q_t = 0 get w(0), uniform
    over the remaining classes (line 12).
    """
    allowed = (~excluded).to(q.dtype)
    uniform = allowed / allowed.sum(dim=1, keepdim=True)
    # T > 0 whenever Q_t < 1; Q_t = 1 only after a crossing that onnxruntime rejected, where
    # the limit T -> 0 (hard assignment) is approached with a small floor instead of dividing by 0.
    temperature = (-torch.log(fraction.clamp_min(torch.finfo(q.dtype).tiny))).clamp_min(1e-6)
    logits = (q / temperature[:, None]).masked_fill(excluded, float("-inf"))
    weights = torch.softmax(logits, dim=1)
    return torch.where((fraction > 0)[:, None], weights, uniform)


def repeat_weight_updates(q: np.ndarray, w: np.ndarray, excluded: np.ndarray, counts: Sequence[int],
                          pi: float, tolerance: float = 1e-12
                          ) -> tuple[np.ndarray, list[tuple[int, np.ndarray] | None]]:
    """``counts[i]`` successive updates of eqs. (7)-(8) for row i with its q_st held, on the host in
    float64: what Algorithm 1 does to w over ``counts[i]`` steps on which no image changes class
    (each step updates w once, and only w moves Q_t). ``q``, ``w`` (a, K); ``excluded`` (a, K) as in
    update_weights. A row stops early once an update leaves it unchanged (to ``tolerance``): it is
    at the fixed point of eqs. (7)-(8), and further updates would not move it.

    Returns the updated w and, per row, where Algorithm 1 would have stopped on the way: the first
    step k >= 2 whose check (line 5) Q_t(q, w after k - 1 updates) >= pi passes, with that w; or
    None (step k = 1 is the check the caller has made already)."""
    allowed = ~excluded
    uniform = allowed / allowed.sum(axis=1, keepdims=True)
    remaining = np.asarray(counts, dtype=np.int64).copy()
    w = w.copy()
    crossings: list[tuple[int, np.ndarray] | None] = [None] * len(remaining)
    done = 0
    while (remaining > 0).any():
        live = remaining > 0
        fraction = (w * q).sum(axis=1)
        if done > 0:
            for row in np.flatnonzero(live & (fraction >= pi)):
                if crossings[row] is None:
                    crossings[row] = (done + 1, w[row].copy())
        temperature = np.maximum(-np.log(np.maximum(fraction, np.finfo(np.float64).tiny)), 1e-6)
        logits = np.where(excluded, -np.inf, q / temperature[:, None])
        logits = np.exp(logits - logits.max(axis=1, keepdims=True))
        updated = np.where((fraction > 0)[:, None], logits / logits.sum(axis=1, keepdims=True), uniform)
        moved = np.abs(updated - w).max(axis=1)
        w = np.where(live[:, None], updated, w)
        remaining = np.where(live & (moved > tolerance), remaining - 1, 0)
        done += 1
    return w, crossings
