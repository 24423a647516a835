"""L-RED pattern estimation: Algorithm 1 of Xiang, Miller & Kesidis (App. A.2), all targets at once.

For each putative target class t, starting from v = 0 and w uniform over s != t (w_t = 0):

    line 4   v(tau+1) = v(tau) + delta * grad_v J_t(v(tau), w(tau)) / ||grad_v J_t||_2     eq. (5)
             J_t(v, w) = sum_{s != t} w_s mean_{x in D_s} log p(t | [x + v]_c)
    line 5   stop when Q_t(v(tau+1), w(tau)) = sum_s w_s q_st(v(tau+1)) >= pi
    line 8   T(tau+1) = -log Q_t(v(tau+1), w(tau))                                        eq. (7)
    line 10  w_s(tau+1) = softmax_{s != t}(q_st(v(tau+1)) / T(tau+1))                     eq. (8)
    line 12  w(tau+1) = w(0) when Q_t(v(tau+1), w(tau)) = 0

Scheduling: every unfinished target is in one batched forward/backward per iteration, and the
forward pass at v(tau+1) serves both the stopping check of line 5 and the gradient of line 4 of
the next iteration (J_t is linear in w, so per-source gradient sums are kept and combined with
w(tau+1) once the q_st are known). With a fixed step this is Algorithm 1 exactly. The per-job
state (v, w, the last step) is stacked into (jobs, ...) tensors and lines 5-12 run for all jobs
of a pass at once, with one transfer to the host per pass: on a GPU, per-job kernels and host
reads cost several times the forward/backward itself (docs/benchmarks.md, "On a GPU").

Step length (each option measured in docs/benchmarks.md and README "Step schedule"):
``adaptive_step`` (the scan's default: a per-target step controlled by how much w moved, below),
``relative_step`` (step proportional to ||v||), ``crossing_resolution`` (bisect the step that
crosses pi). With ``adaptive_step``, ``weight_update_length`` (the scan's default: the paper's
delta) keeps the number of updates of w per unit of path what Algorithm 1 with that step does:
w, not only v, moves with each of its steps, so longer steps alone would leave w behind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .clipping import clip_pixels
from .cuda_graphs import GraphedUnit, run_and_capture
from .estimation import (
    STATUS_CONVERGED,
    STATUS_MAX_ITERATIONS,
    STATUS_UNVERIFIED,
    STATUS_ZERO_GRADIENT,
    Confirm,
    DifferentiableClassifier,
    PairBatch,
    PatternEstimate,
    Progress,
)


@dataclass(frozen=True)
class Job:
    """One pattern estimation: putative target t, the classes s whose images D_s enter J_t and
    Q_t (for L-RED every s != t), and whether w adapts by eq. (8) or stays at w(0)."""

    target: int
    sources: tuple[int, ...]
    adapt_weights: bool = True


# Weight-controlled step (``adaptive_step``). A fixed normalized step lengthens v by a whole step
# between two updates of w; while w is still moving, part of that length goes to classes that
# lose their weight and stays in ||v_t||. So, per target, after each update of eqs. (7)-(8):
# halve the step (never below delta) when ||w(tau+1) - w(tau)||_1 > WEIGHT_CHANGE_SHRINK, and
# lengthen it by STEP_GROWTH (never above adaptive_step) when the change is below
# WEIGHT_CHANGE_GROW and Q_t > 0. Thresholds chosen in benchmarks/adaptive_step.py on the sample
# model (docs/benchmarks.md, "Prototype"); they are not tuned per model.
# Before the first misclassification (Q_t = 0 at every point so far) w stays w(0) (line 12), so
# nothing a long step could get wrong about the weights: the step grows by STEP_GROWTH there too,
# and the step on which Q_t first turns positive is bisected back to the first misclassified
# point (to within the crossing resolution); the step then restarts at delta, the state the
# schedule would have reached with steps of delta (docs/benchmarks.md, "Long steps before the
# first misclassification").
WEIGHT_CHANGE_SHRINK = 0.01
WEIGHT_CHANGE_GROW = 0.003
STEP_GROWTH = 1.25


def lred_jobs(num_classes: int) -> list[Job]:
    """L-RED: one job per putative target class, over all other classes (Sec. 3.1)."""
    return [Job(t, tuple(s for s in range(num_classes) if s != t)) for t in range(num_classes)]


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
                          pi: float, tolerance: float = 1e-12) -> tuple[np.ndarray, list[tuple[int, np.ndarray] | None]]:
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


def estimate_patterns(classifier: DifferentiableClassifier, pixels: torch.Tensor, labels: torch.Tensor,
                      num_classes: int, *, pi: float, delta: float, max_iterations: int,
                      batch_images: int, jobs: Sequence[Job] | None = None,
                      confirm: Confirm | None = None, max_rejected_iterations: int = 0,
                      progress: Progress | None = None, crossing_resolution: float | None = None,
                      relative_step: float | None = None,
                      adaptive_step: float | None = None, weight_update_length: float | None = None,
                      cuda_graphs: bool = True, notice: Callable[[str], None] | None = None) -> list[PatternEstimate]:
    """Run Algorithm 1 for every job (by default L-RED: every putative target class).

    ``pixels`` (M, *pixel_shape) clean images in [0, 1], ``labels`` (M,) their classes.
    ``confirm`` is asked before a job is accepted (onnxruntime's view of Q_t >= pi); a job it
    rejects keeps iterating for at most ``max_rejected_iterations`` more steps.
    ``crossing_resolution``: when set below ``delta``, the step that first reaches Q_t >= pi is
    shortened by bisection, without gradients, to the shortest fraction of it (to within this
    length) that still reaches pi; the stopping check then sees the same w(tau) as line 5.
    ``relative_step``: when set, the step length is max(delta, relative_step * ||v(tau)||)
    instead of delta, so the path is resolved to the same relative precision at every scale.
    ``adaptive_step``: when set (> delta), each job's step starts at delta and is controlled by
    the change of its weights (see WEIGHT_CHANGE_SHRINK), between delta and adaptive_step; the
    crossing step is then bisected to ``crossing_resolution`` or, when that is unset, to delta,
    and so is the step on which Q_t first turns positive.
    ``weight_update_length``: with ``adaptive_step``, the path length per update of w that the
    schedule reproduces (the paper's delta): after a step of length h, w is updated by eqs.
    (7)-(8) round(h / weight_update_length) times with the q_st of the new point, as Algorithm 1
    with that step would over the same length (README "Step schedule"); unset: once per step.
    Jobs whose weights do not adapt (U-RED, P-RED) keep the fixed step delta.
    ``cuda_graphs``: on a CUDA device, replay each unit's passes as a CUDA graph from its second
    iteration on (scanner/cuda_graphs.py); ``notice`` hears why, if that is refused.
    """
    if adaptive_step is not None and crossing_resolution is None:
        crossing_resolution = delta
    device = classifier.device
    x_all = pixels.to(device)
    y_all = labels.to(device)
    K = num_classes
    jobs = lred_jobs(K) if jobs is None else list(jobs)
    pixel_shape = tuple(x_all.shape[1:])
    dtype = x_all.dtype
    counts = torch.bincount(y_all, minlength=K).to(dtype)
    inv_counts = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    batch = PairBatch(y_all, [job.sources for job in jobs], batch_images)

    n = len(jobs)
    # per-job state, stacked so that one iteration of every job is a handful of tensor ops and
    # one transfer to the host (on a GPU, per-job kernels and syncs would cost more than the
    # forward/backward pass itself)
    v = torch.zeros((n,) + pixel_shape, device=device, dtype=dtype)
    last_step = torch.zeros_like(v)
    w = torch.as_tensor(np.stack([uniform_weights(K, j.target, j.sources) for j in jobs]), device=device,
                        dtype=dtype)
    excluded = torch.ones((n, K), dtype=torch.bool, device=device)
    for i, j in enumerate(jobs):
        excluded[i, list(j.sources)] = False
    adapts = torch.as_tensor([j.adapt_weights for j in jobs], device=device)
    targets = torch.as_tensor([j.target for j in jobs], device=device)
    step_length = [delta] * n
    last_length = [0.0] * n                 # ||last_step||, as set (the norm read back may differ by rounding)
    iterations = [0] * n
    rejections = [0] * n
    first_rejection: list[int | None] = [None] * n
    misclassified = [False] * n             # Q_t > 0 seen at some point of the job's path
    # path length the next update of w stands for (weight_update_length): the last step's, or
    # the bisection bracket after a step was cut back to the first misclassified point
    update_span = [0.0] * n
    q_before = torch.zeros((n, K), device=device, dtype=dtype)   # q_st where the job's last step began
    results: dict[int, PatternEstimate] = {}

    def finish(i: int, q_row: torch.Tensor, fraction: float, status: str) -> None:
        results[i] = PatternEstimate(
            target_class=jobs[i].target, pattern=v[i].detach().cpu().numpy().copy(),
            iterations=iterations[i], misclassification=q_row.detach().cpu().double().numpy(),
            source_weights=w[i].detach().cpu().double().numpy(), fraction=fraction,
            status=status, check_rejections=rejections[i], sources=jobs[i].sources)

    def fractions_at(i: int, pattern: torch.Tensor) -> torch.Tensor:
        """q_st for job i at ``pattern``: a forward pass without gradients."""
        q = torch.zeros(K, device=device, dtype=dtype)
        rows = batch.rows[i]
        with torch.no_grad():
            for start in range(0, rows.numel(), batch_images):
                idx = rows[start:start + batch_images]
                predicted = classifier.scores(clip_pixels(x_all[idx] + pattern)).argmax(dim=1)
                q.index_add_(0, y_all[idx], (predicted == jobs[i].target).to(dtype))
        return q * inv_counts

    def bisect_last_step(i: int, length: float, reached) -> tuple[float, float, torch.Tensor | None]:
        """Shortest fraction of job i's last step (of the given length) whose point still
        satisfies ``reached(q_st there)``, to within the crossing resolution (bisection, no
        gradients): (the bracket's low and high fractions, q_st at high, or None when no
        midpoint was tried)."""
        start, step = v[i] - last_step[i], last_step[i]
        low, high = 0.0, 1.0
        q_high = None
        while (high - low) * length > crossing_resolution:
            middle = 0.5 * (low + high)
            q_mid = fractions_at(i, start + middle * step)
            if reached(q_mid):
                high, q_high = middle, q_mid
            else:
                low = middle
        return low, high, q_high

    def refine_crossing(i: int) -> torch.Tensor:
        """Shortest fraction of the last step that still reaches pi (bisection); returns q there."""
        _, high, q_high = bisect_last_step(i, float(torch.linalg.vector_norm(last_step[i])),
                                           lambda q: float((w[i] * q).sum()) >= pi)
        if q_high is not None:
            v[i] = v[i] - last_step[i] + high * last_step[i]
        return q_high

    def control_step(i: int, weight_change: float, fraction: float) -> None:
        """The ``adaptive_step`` rule (see WEIGHT_CHANGE_SHRINK) for job i, after an update of w."""
        if weight_change > WEIGHT_CHANGE_SHRINK:
            step_length[i] = max(0.5 * step_length[i], delta)
        elif weight_change < WEIGHT_CHANGE_GROW and (fraction > 0 or not misclassified[i]):
            step_length[i] = min(STEP_GROWTH * step_length[i], adaptive_step)

    def locate_first_misclassification(i: int) -> None:
        """Job i's last step, from a point where Q_t = 0, reached Q_t > 0: move v back to the
        shortest fraction of that step (to within the crossing resolution) where Q_t(v, w(0)) > 0
        and restart the step at delta. The next pass evaluates q and the gradient there."""
        length = last_length[i]
        _, high, _ = bisect_last_step(i, length, lambda q: float((w[i] * q).sum()) > 0)
        start = v[i] - last_step[i]
        last_step[i] = high * last_step[i]
        last_length[i] = high * length
        v[i] = start + last_step[i]
        step_length[i] = delta
        # the first misclassified point lies within the last bisection bracket (at most the
        # crossing resolution long); next_weights counts half of it, as for any step on which an
        # image changed class
        update_span[i] = min(crossing_resolution, last_length[i])

    def next_weights(members: list[int], q: torch.Tensor, fraction: torch.Tensor, w_now: torch.Tensor,
                     excluded_rows: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, np.ndarray] | None]]:
        """w(tau+1) by eqs. (7)-(8) for the jobs ``members`` at v(tau+1): once, or with
        ``weight_update_length`` as many times as Algorithm 1 would over the path just taken;
        and, per job, where those updates would have stopped Algorithm 1 inside the step (see
        repeat_weight_updates; None when they would not have)."""
        if weight_update_length is None:
            return update_weights(q, fraction, excluded_rows), [None] * len(members)
        # where an image changed class during the step, the q_st of its end held for half of it
        # on average (Algorithm 1 updated w with the earlier q_st before that)
        changed = (q != q_before[members]).any(dim=1).tolist()
        counts = [max(1, round((0.5 if moved else 1.0) * update_span[i] / weight_update_length))
                  if jobs[i].adapt_weights else 1 for i, moved in zip(members, changed)]
        if max(counts) <= 1:
            return update_weights(q, fraction, excluded_rows), [None] * len(members)
        repeated, crossings = repeat_weight_updates(q.detach().double().cpu().numpy(),
                                                    w_now.detach().double().cpu().numpy(),
                                                    excluded_rows.cpu().numpy(), counts, pi)
        return torch.as_tensor(repeated, dtype=dtype).to(device), crossings

    def stop_within_last_step(i: int, q_end: torch.Tensor, k: int, w_check: np.ndarray) -> bool:
        """Algorithm 1, stepping by weight_update_length, would have stopped k of its steps into
        job i's last step (the repeated updates of w reached pi there, see repeat_weight_updates):
        stop job i at that point if, there, Q_t >= pi with those weights (and onnxruntime agrees).
        False, with nothing changed, when it does not (an image changed class later in the step)."""
        start, length = v[i] - last_step[i], last_length[i]
        if length <= 0.0:
            return False
        change = 0.0             # where on the step an image first changed class (bisection)
        if not bool((q_before[i] == q_end).all()):
            low, high, _ = bisect_last_step(i, length, lambda q: not bool((q == q_before[i]).all()))
            change = 0.5 * (low + high)
        fraction_of_step = change + k * weight_update_length / length
        if fraction_of_step >= 1.0:
            return False
        point = start + fraction_of_step * last_step[i]
        weights = torch.as_tensor(w_check, dtype=dtype).to(device)
        q_there = fractions_at(i, point)
        fraction = float((weights * q_there).sum())
        if fraction < pi:
            return False
        if confirm is not None and not bool(confirm([jobs[i].target], point[None].cpu().numpy(),
                                                    weights[None].cpu().numpy())[0]):
            return False
        v[i] = point
        last_step[i] = fraction_of_step * last_step[i]
        last_length[i] = fraction_of_step * last_length[i]
        w[i] = weights
        finish(i, q_there, fraction, STATUS_CONVERGED)
        return True

    def advance(i: int, q: torch.Tensor, grad_by_source: torch.Tensor) -> None:
        """Lines 5-12 for job i at v(tau+1), then line 4 of the next iteration: the path of a job
        that reached pi or its last iteration (the others take the batched path below, which
        does the same arithmetic for many jobs at once)."""
        fraction = float((w[i] * q).sum())
        if iterations[i] > 0:                      # line 5: no check before the first step
            if fraction >= pi:
                if crossing_resolution is not None and crossing_resolution < last_length[i]:
                    refined = refine_crossing(i)
                    if refined is not None:
                        q, fraction = refined, float((w[i] * refined).sum())
                accepted = True
                if confirm is not None:
                    accepted = bool(confirm([jobs[i].target], v[i][None].cpu().numpy(),
                                            w[i][None].cpu().numpy())[0])
                if accepted:
                    finish(i, q, fraction, STATUS_CONVERGED)
                    return
                rejections[i] += 1
                if first_rejection[i] is None:
                    first_rejection[i] = iterations[i]
                if iterations[i] - first_rejection[i] >= max_rejected_iterations:
                    finish(i, q, fraction, STATUS_UNVERIFIED)
                    return
            if iterations[i] >= max_iterations:
                finish(i, q, fraction, STATUS_MAX_ITERATIONS)
                return
            if jobs[i].adapt_weights:
                updated, (crossing,) = next_weights([i], q[None], torch.as_tensor([fraction], device=device,
                                                                                  dtype=dtype), w[i][None], excluded[i][None])
                updated = updated[0]
                if crossing is not None and stop_within_last_step(i, q, *crossing):
                    return
                if adaptive_step is not None:
                    control_step(i, float(torch.linalg.vector_norm(updated - w[i], ord=1)), fraction)
                w[i] = updated
        coefficient = (w[i] * inv_counts).reshape((K,) + (1,) * len(pixel_shape))
        gradient = (coefficient * grad_by_source).sum(dim=0)              # grad_v J_t(v, w)
        norm = torch.linalg.vector_norm(gradient)
        if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
            finish(i, q, fraction, STATUS_ZERO_GRADIENT)
            return
        length = step_length[i]
        if relative_step is not None:
            length = max(delta, relative_step * float(torch.linalg.vector_norm(v[i])))
        last_step[i] = length * gradient / norm                           # eq. (5)
        last_length[i] = length
        update_span[i] = length
        q_before[i] = q
        v[i] = v[i] + last_step[i]
        iterations[i] += 1

    def layout(active: list[int]) -> list[tuple[list[int], torch.Tensor | slice, list[tuple], torch.Tensor]]:
        """The forward passes of one iteration, as units of (jobs, their index into the stacked
        state, passes, the source class of each job's slots): a unit's passes hold every image
        row of its jobs, so the jobs can take their step once the unit is done. A pass is (image
        rows, each row's position among the unit's jobs, its target, the (position, source slot)
        key its hit and gradient are summed under).
        A unit is one pass, except for a job with more rows than ``batch_images``, which gets a
        unit of its own, split into passes. Memory per unit is therefore bounded by the chunk."""
        units: list[tuple[list[int], list[list[tuple[int, torch.Tensor]]]]] = []
        for group in batch.chunks(active):
            members = list(dict.fromkeys(i for i, _ in group))
            if len(members) == 1 and units and units[-1][0] == members and len(group) == 1 \
                    and batch.rows[members[0]].numel() > batch_images:
                units[-1][1].append(group)             # the next piece of a split job
            else:
                units.append((members, [group]))
        laid_out = []
        for members, groups in units:
            position = {i: p for p, i in enumerate(members)}
            # sums are kept per (job, source slot), not per (job, class): a P-RED job has one
            # source, so this keeps the unit's gradient sums as small as its image rows
            slots = max(len(jobs[i].sources) for i in members)
            source_of_slot = torch.full((len(members), slots), K, dtype=torch.long)   # K: padding
            slot_of_class = torch.zeros((len(members), K), dtype=torch.long)
            for p, i in enumerate(members):
                source_of_slot[p, :len(jobs[i].sources)] = torch.as_tensor(jobs[i].sources)
                slot_of_class[p, list(jobs[i].sources)] = torch.arange(len(jobs[i].sources))
            source_of_slot, slot_of_class = source_of_slot.to(device), slot_of_class.to(device)
            # a run of consecutive jobs is addressed by a slice (a view, no gather or scatter)
            index = slice(members[0], members[-1] + 1) if members == list(range(members[0], members[-1] + 1)) \
                else torch.as_tensor(members, device=device)
            passes = []
            for group in groups:
                rows_image = torch.cat([idx for _, idx in group])
                rows_position = torch.cat([torch.full((idx.numel(),), position[i], device=device,
                                                      dtype=torch.long) for i, idx in group])
                passes.append((rows_image, rows_position, targets[index][rows_position],
                               rows_position * slots + slot_of_class[rows_position, y_all[rows_image]]))
            laid_out.append((members, index, passes, source_of_slot))
        return laid_out

    def step(members: list[int], index: torch.Tensor | slice, v_now: torch.Tensor, q: torch.Tensor,
             grads: torch.Tensor, source_of_slot: torch.Tensor, first_iteration: bool) -> None:
        """Lines 5-12 and then line 4 for the jobs ``members`` at once, with one transfer to the
        host. ``q`` (a, K) is q_st at v(tau+1); ``grads`` (a, slots, *pixel_shape) the summed
        gradients of log p(t | [x + v]_c) per source slot. It is computed for every job before
        knowing which ones reach pi or their last iteration; those are then redone one by one by
        advance(), from the unchanged state."""
        a = len(members)
        w_now = w[index]
        fraction = (w_now * q).sum(dim=1)                                  # Q_t(v(tau+1), w(tau))
        adapting = [jobs[i].adapt_weights for i in members]
        crossings = [None] * a
        if first_iteration or not any(adapting):
            w_next = w_now
        else:
            w_next, crossings = next_weights(members, q, fraction, w_now, excluded[index])   # eqs. (7)-(8)
            if not all(adapting):
                w_next = torch.where(adapts[index][:, None], w_next, w_now)
        per_class = torch.nn.functional.pad(w_next * inv_counts, (0, 1))  # column K: padding slots
        coefficient = per_class.gather(1, source_of_slot).reshape(source_of_slot.shape + (1,) * len(pixel_shape))
        gradient = (coefficient * grads).sum(dim=1)                        # grad_v J_t(v, w)
        # what the host needs: Q_t, ||grad||, and only where used, ||w(tau+1) - w(tau)||_1 and ||v||
        wanted = [fraction, torch.linalg.vector_norm(gradient.flatten(1), dim=1)]
        if adaptive_step is not None:
            wanted.append(torch.linalg.vector_norm(w_next - w_now, ord=1, dim=1))
        if relative_step is not None:
            wanted.append(torch.linalg.vector_norm(v_now.flatten(1), dim=1))
        on_host = torch.stack(wanted).cpu().numpy().astype(np.float64)
        moving, scale = [], []
        for p, i in enumerate(members):
            f, g, length = on_host[0, p], on_host[1, p], step_length[i]
            if f > 0 and not misclassified[i]:
                misclassified[i] = True
                if not first_iteration and adaptive_step is not None and jobs[i].adapt_weights \
                        and last_length[i] > crossing_resolution:
                    locate_first_misclassification(i)
                    continue
            if not first_iteration and (f >= pi or iterations[i] >= max_iterations):
                by_class = torch.zeros((K + 1,) + pixel_shape, device=device, dtype=dtype)
                advance(i, q[p], by_class.index_add_(0, source_of_slot[p], grads[p])[:K])
                continue
            if crossings[p] is not None and stop_within_last_step(i, q[p], *crossings[p]):
                continue
            if not first_iteration and jobs[i].adapt_weights and adaptive_step is not None:
                control_step(i, on_host[2, p], f)
                length = step_length[i]
            if not np.isfinite(g) or g == 0.0:
                w[i] = w_next[p]
                finish(i, q[p], float(f), STATUS_ZERO_GRADIENT)
                continue
            if relative_step is not None:
                length = max(delta, relative_step * on_host[-1, p])
            moving.append(p)
            scale.append(length / g)
            last_length[i] = length
            update_span[i] = length
            iterations[i] += 1
        if not moving:
            return
        scale = torch.as_tensor(scale, dtype=dtype).to(device, non_blocking=True).reshape(
            (-1,) + (1,) * len(pixel_shape))
        if len(moving) < a:                    # some jobs stopped: move the others only
            where = torch.as_tensor(moving, device=device)
            index = torch.as_tensor([members[p] for p in moving], device=device)
            v_now, w_next, gradient = v_now[where], w_next[where], gradient[where]
        last = scale * gradient                                             # eq. (5)
        w[index] = w_next
        q_before[index] = q if len(moving) == a else q[where]
        last_step[index] = last
        v[index] = v_now + last

    def sums_of(passes: list[tuple], a: int, slots: int):
        """The unit's forward/backward passes as one function of v of its jobs: the hits (Q_t's
        numerators) and gradient sums of log p(t | [x + v]_c) per (job, source slot)."""
        def unit_sums(v_now: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            hits = torch.zeros(a * slots, device=device, dtype=dtype)
            grads = torch.zeros((a * slots,) + pixel_shape, device=device, dtype=dtype)
            for rows_image, rows_position, target_of_row, pair_key in passes:
                u = v_now[rows_position].requires_grad_(True)
                with torch.enable_grad():
                    scores = classifier.scores(clip_pixels(x_all[rows_image] + u))      # eq. (1)
                    log_p = classifier.log_posterior(scores).gather(1, target_of_row[:, None]).sum()
                    (row_grads,) = torch.autograd.grad(log_p, u)
                hits.index_add_(0, pair_key, (scores.detach().argmax(dim=1) == target_of_row).to(dtype))
                grads.index_add_(0, pair_key, row_grads)
            return hits, grads
        return unit_sums

    # On a GPU, when every active job's rows fit in one unit (the batch is small, so kernel
    # launches cost more than the kernels), the unit is captured as a CUDA graph on its second
    # iteration with the same layout and replayed from then on (scanner/cuda_graphs.py); the
    # graph is dropped when the layout changes. Layouts of several units run eagerly: their
    # passes are large enough for launches not to matter, and each unit's graph would keep its
    # own output buffers allocated, so memory would grow with the number of units.
    use_graphs = cuda_graphs and device.type == "cuda"
    graph: GraphedUnit | None = None          # the current layout's one unit, once captured
    layout_iterations = 0                     # iterations run with the current layout
    pool = torch.cuda.graph_pool_handle() if use_graphs else None

    active = list(range(n))
    units = layout(active)
    first_iteration = True
    while active:
        layout_iterations += 1
        for members, index, passes, source_of_slot in units:
            a, slots = source_of_slot.shape
            v_now = v[index]
            if graph is not None:
                hits, grads = graph.run(v_now)
            elif use_graphs and layout_iterations == 2 and len(units) == 1:
                (hits, grads), graph, refusal = run_and_capture(sums_of(passes, a, slots), v_now, pool)
                if graph is None:
                    use_graphs = False
                    if notice is not None:
                        notice(f"CUDA graphs off for this scan, passes run eagerly ({refusal})")
            else:
                hits, grads = sums_of(passes, a, slots)(v_now)
            hits_by_class = torch.zeros((a, K + 1), device=device, dtype=dtype).scatter_(
                1, source_of_slot, hits.view(a, slots))[:, :K]
            step(members, index, v_now, hits_by_class * inv_counts, grads.view((a, slots) + pixel_shape),
                 source_of_slot, first_iteration)
        first_iteration = False
        still = [i for i in active if i not in results]
        if still != active:
            active = still
            units = layout(active) if active else []
            graph = None
            layout_iterations = 0
            if use_graphs:
                pool = torch.cuda.graph_pool_handle()
        if progress is not None:
            progress(max(iterations, default=0), len(results), n)
    return [results[i] for i in range(n)]
