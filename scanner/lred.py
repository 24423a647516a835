"""L-RED pattern estimation: Algorithm 1 of Xiang, Miller & Kesidis (App. A.2), all targets at once.

For each putative target class t, starting from v = 0 and w uniform over s != t (w_t = 0):

    line 4   v(tau+1) = v(tau) + delta * grad_v J_t(v(tau), w(tau)) / ||grad_v J_t||_2     eq. (5)
             J_t(v, w) = sum_{s != t} w_s mean_{x in D_s} log p(t | [x + v]_c)
    line 5   stop when Q_t(v(tau+1), w(tau)) = sum_s w_s q_st(v(tau+1)) >= pi
    line 8   T(tau+1) = -log Q_t(v(tau+1), w(tau))                                        eq. (7)
    line 10  w_s(tau+1) = softmax_{s != t}(q_st(v(tau+1)) / T(tau+1))                     eq. (8)
    line 12  w(tau+1) = w(0) when Q_t(v(tau+1), w(tau)) = 0

The only change to the paper's loop is in scheduling, not numerics: every unfinished target is
in one batched forward/backward per iteration, and the forward pass at v(tau+1) serves both the
stopping check of line 5 and the gradient of line 4 of the next iteration (J_t is linear in w,
so per-source gradient sums are kept and combined with w(tau+1) once the q_st are known).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .clipping import clip_pixels
from .estimation import (STATUS_CONVERGED, STATUS_MAX_ITERATIONS, STATUS_UNVERIFIED,
                         STATUS_ZERO_GRADIENT, Confirm, DifferentiableClassifier, PairBatch,
                         PatternEstimate, Progress)


def uniform_weights(num_classes: int, target: int) -> np.ndarray:
    """w(0): 1/(K-1) for every s != t, and w_t = 0 (Algorithm 1, line 2)."""
    w = np.full(num_classes, 1.0 / (num_classes - 1))
    w[target] = 0.0
    return w


def update_weights(q: torch.Tensor, fraction: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Eqs. (7)-(8) for a batch of targets: w_s = softmax_{s != t}(q_st / T), T = -log Q_t.

    ``q`` (k, K) misclassification fractions, ``fraction`` (k,) Q_t, ``target_mask`` (k, K)
    true at s = t. Rows with Q_t = 0 get w(0) (line 12). Q_t < 1 always here, so T > 0.
    """
    k, num_classes = q.shape
    uniform = (~target_mask).to(q.dtype) / (num_classes - 1)
    temperature = -torch.log(fraction.clamp_min(torch.finfo(q.dtype).tiny))
    logits = (q / temperature[:, None]).masked_fill(target_mask, float("-inf"))
    weights = torch.softmax(logits, dim=1)
    return torch.where((fraction > 0)[:, None], weights, uniform)


def estimate_patterns(classifier: DifferentiableClassifier, pixels: torch.Tensor, labels: torch.Tensor,
                      num_classes: int, *, pi: float, delta: float, max_iterations: int,
                      batch_images: int, targets: Sequence[int] | None = None,
                      confirm: Confirm | None = None, max_rejected_iterations: int = 0,
                      progress: Progress | None = None, fixed_weights: bool = False,
                      ) -> list[PatternEstimate]:
    """Run Algorithm 1 for every putative target class in ``targets`` (all classes by default).

    ``pixels`` (M, *pixel_shape) clean images in [0, 1], ``labels`` (M,) their classes.
    ``confirm`` is asked before a target is accepted (onnxruntime's view of Q_t >= pi); a target
    it rejects keeps iterating for at most ``max_rejected_iterations`` more steps.
    ``fixed_weights`` keeps w = w(0) throughout (U-RED, Sec. 4.3).
    """
    device = classifier.device
    x_all = pixels.to(device)
    y_all = labels.to(device)
    K = num_classes
    targets = list(range(K)) if targets is None else list(targets)
    pixel_shape = tuple(x_all.shape[1:])
    counts = torch.bincount(y_all, minlength=K).to(x_all.dtype)
    inv_counts = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    batch = PairBatch(y_all, K, batch_images)

    v = {t: torch.zeros(pixel_shape, device=device, dtype=x_all.dtype) for t in targets}
    w = {t: torch.as_tensor(uniform_weights(K, t), device=device, dtype=x_all.dtype) for t in targets}
    iterations = {t: 0 for t in targets}
    rejections = {t: 0 for t in targets}
    first_rejection = {t: None for t in targets}
    results: dict[int, PatternEstimate] = {}

    def finish(t: int, q_row: torch.Tensor, fraction: float, status: str) -> None:
        results[t] = PatternEstimate(
            target_class=t, pattern=v[t].detach().cpu().numpy().copy(), iterations=iterations[t],
            misclassification=q_row.detach().cpu().double().numpy(),
            source_weights=w[t].detach().cpu().double().numpy(), fraction=fraction,
            status=status, check_rejections=rejections[t])

    def advance(t: int) -> None:
        """Lines 5-12 for target t at v(tau+1), then line 4 of the next iteration."""
        q = hits_sum[t] * inv_counts
        q[t] = 0.0
        grad_by_source = grad_sum.pop(t)
        fraction = float((w[t] * q).sum())
        if iterations[t] > 0:                      # line 5: no check before the first step
            if fraction >= pi:
                accepted = True
                if confirm is not None:
                    accepted = bool(confirm([t], v[t][None].cpu().numpy(), w[t][None].cpu().numpy())[0])
                if accepted:
                    finish(t, q, fraction, STATUS_CONVERGED)
                    return
                rejections[t] += 1
                if first_rejection[t] is None:
                    first_rejection[t] = iterations[t]
                if iterations[t] - first_rejection[t] >= max_rejected_iterations:
                    finish(t, q, fraction, STATUS_UNVERIFIED)
                    return
            if iterations[t] >= max_iterations:
                finish(t, q, fraction, STATUS_MAX_ITERATIONS)
                return
            if not fixed_weights:
                mask = torch.zeros(1, K, dtype=torch.bool, device=device)
                mask[0, t] = True
                w[t] = update_weights(q[None], torch.as_tensor([fraction], device=device,
                                                               dtype=q.dtype), mask)[0]
        coefficient = (w[t] * inv_counts).reshape((K,) + (1,) * len(pixel_shape))
        gradient = (coefficient * grad_by_source).sum(dim=0)              # grad_v J_t(v, w)
        norm = torch.linalg.vector_norm(gradient)
        if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
            finish(t, q, fraction, STATUS_ZERO_GRADIENT)
            return
        v[t] = v[t] + delta * gradient / norm                             # eq. (5)
        iterations[t] += 1

    active = list(targets)
    while active:
        hits_sum = {t: torch.zeros(K, device=device, dtype=x_all.dtype) for t in active}
        grad_sum = {}
        remaining = {t: int(batch.others[t].numel()) for t in active}
        for group in batch.chunks(active):
            group_targets = [t for t, _ in group]
            rows_image = torch.cat([idx for _, idx in group])
            rows_local = torch.cat([torch.full((idx.numel(),), i, device=device, dtype=torch.long)
                                    for i, (_, idx) in enumerate(group)])
            target_of_row = torch.as_tensor(group_targets, device=device)[rows_local]
            stacked_v = torch.stack([v[t] for t in group_targets])
            u = stacked_v[rows_local].detach().requires_grad_(True)
            with torch.enable_grad():
                inputs = clip_pixels(x_all[rows_image] + u)                      # eq. (1)
                scores = classifier.scores(inputs)
                log_p_target = classifier.log_posterior(scores).gather(1, target_of_row[:, None]).sum()
                (row_grads,) = torch.autograd.grad(log_p_target, u)
            hits = (scores.detach().argmax(dim=1) == target_of_row).to(x_all.dtype)
            pair_key = rows_local * K + y_all[rows_image]
            hit_counts = torch.zeros(len(group) * K, device=device, dtype=x_all.dtype)
            hit_counts.index_add_(0, pair_key, hits)
            grads = torch.zeros((len(group) * K,) + pixel_shape, device=device, dtype=x_all.dtype)
            grads.index_add_(0, pair_key, row_grads)
            for i, (t, idx) in enumerate(group):
                hits_sum[t] += hit_counts[i * K:(i + 1) * K]
                part = grads[i * K:(i + 1) * K]
                grad_sum[t] = part if t not in grad_sum else grad_sum[t] + part
                remaining[t] -= int(idx.numel())
            for t in dict.fromkeys(group_targets):
                if remaining[t] == 0:
                    advance(t)
        active = [t for t in active if t not in results]
        if progress is not None:
            progress(max(iterations.values(), default=0), len(results), len(targets))
    return [results[t] for t in targets]

