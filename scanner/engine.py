"""The batched engine that runs Algorithm 1 (App. A.2) for many jobs at once.

Every unfinished job is in one batched forward/backward per iteration (``engine_passes.py``),
and the forward pass at v(tau+1) serves both the stopping check of line 5 and the gradient of
line 4 of the next iteration (J_t is linear in w, so per-source gradient sums are kept and
combined with w(tau+1) once the q_st are known). With a fixed step this is Algorithm 1 exactly.
The per-job state (v, w, the last step) is stacked into (jobs, ...) tensors and lines 5-12 run
for all jobs of a unit at once, with one transfer to the host per unit: on a GPU, per-job
kernels and host reads cost several times the forward/backward itself (docs/benchmarks.md,
"On a GPU"). A job that reaches pi or its last iteration is redone alone by ``advance``, from
the unchanged state. The step schedule (``schedules.py``) sets step lengths and updates of w.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .clipping import clip_pixels
from .engine_passes import Unit, UnitRunner, lay_out, unit_sums
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
from .schedules import Crossing, StepSchedule
from .weights import Job, uniform_weights


class Engine:
    """Pattern estimation for ``jobs`` over the clean images ``pixels`` (M, *pixel_shape) in
    [0, 1] with classes ``labels`` (M,). ``confirm`` is asked before a job is accepted
    (onnxruntime's view of Q_t >= pi); a job it rejects keeps iterating for at most
    ``max_rejected_iterations`` more steps. ``run`` returns one PatternEstimate per job."""

    relayout_each_iteration = False    # the sampled engine (sampled.py) draws its sources anew every iteration

    def __init__(self, classifier: DifferentiableClassifier, pixels: torch.Tensor, labels: torch.Tensor,
                 num_classes: int, jobs: Sequence[Job], *, pi: float, schedule: StepSchedule,
                 max_iterations: int, batch_images: int, confirm: Confirm | None = None,
                 max_rejected_iterations: int = 0):
        self.classifier, self.schedule, self.jobs = classifier, schedule, list(jobs)
        self.pi, self.max_iterations = pi, max_iterations
        self.confirm, self.max_rejected_iterations = confirm, max_rejected_iterations
        self.device = device = classifier.device
        self.x_all, self.y_all = pixels.to(device), labels.to(device)
        self.K = K = num_classes
        self.pixel_shape = tuple(self.x_all.shape[1:])
        self.dtype = dtype = self.x_all.dtype
        counts = torch.bincount(self.y_all, minlength=K).to(dtype)
        self.inv_counts = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
        self.batch = PairBatch(self.y_all, [job.sources for job in self.jobs], batch_images)
        n = len(self.jobs)
        self.v = torch.zeros((n,) + self.pixel_shape, device=device, dtype=dtype)
        self.last_step = torch.zeros_like(self.v)
        self.w = torch.as_tensor(np.stack([uniform_weights(K, j.target, j.sources) for j in self.jobs]),
                                 device=device, dtype=dtype)
        self.excluded = torch.ones((n, K), dtype=torch.bool, device=device)
        for i, j in enumerate(self.jobs):
            self.excluded[i, list(j.sources)] = False
        self.adapts = torch.as_tensor([j.adapt_weights for j in self.jobs], device=device)
        self.targets = torch.as_tensor([j.target for j in self.jobs], device=device)
        self.step_length = [schedule.delta] * n  # the schedule's current step length per job
        self.last_length = [0.0] * n            # ||last_step||, as set (the norm read back may differ by rounding)
        self.iterations = [0] * n
        self.rejections = [0] * n
        self.first_rejection: list[int | None] = [None] * n
        self.misclassified = [False] * n        # Q_t > 0 seen at some point of the job's path
        # path length the next update of w stands for (weight_update_length): the last step's, or
        # the bisection bracket after a step was cut back to the first misclassified point
        self.update_span = [0.0] * n
        self.q_before = torch.zeros((n, K), device=device, dtype=dtype)   # q_st where the last step began
        # per job and class, a factor on w_s in grad_v J_t: None (the full method: every source is in
        # every pass); the sampled engine (scanner/sampled.py) sets the importance weights of its draws
        self.source_scale: torch.Tensor | None = None
        self.results: dict[int, PatternEstimate] = {}
        self.started = False                    # the first iteration (no check before a step) is done
        self.image_passes = 0                   # image rows through forward+backward (one per row and pass)
        self.forward_images = 0                 # image rows through a forward pass alone (bisection)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, progress: Progress | None = None, cuda_graphs: bool = True,
            notice: Callable[[str], None] | None = None) -> list[PatternEstimate]:
        """Iterate until every job is finished. ``cuda_graphs``: on a CUDA device, replay each
        unit's passes as a CUDA graph from its second iteration on; ``notice`` hears why, if
        that is refused."""
        self.iterate(range(len(self.jobs)), progress, cuda_graphs, notice)
        return [self.results[i] for i in range(len(self.jobs))]

    def iterate(self, jobs: Sequence[int], progress: Progress | None = None, cuda_graphs: bool = True,
                notice: Callable[[str], None] | None = None, rounds: int | None = None) -> None:
        """Iterate the jobs ``jobs`` (indices) until they are finished, or for at most ``rounds``
        iterations (None: no limit). The jobs left unfinished keep their state, so a later call
        continues their paths exactly where this one stopped (the scalable mode's screen,
        scanner/scalable.py). Counts the image rows it evaluates in ``image_passes``."""
        n = len(self.jobs)
        runner = UnitRunner(cuda_graphs and self.device.type == "cuda", notice)
        active = [i for i in jobs if i not in self.results]
        units = self.lay_out(active) if active else []
        done_rounds = 0
        while active and (rounds is None or done_rounds < rounds):
            runner.start_iteration()
            for unit in units:
                a, slots = unit.source_of_slot.shape
                v_now = self.v[unit.index]
                hits, grads = runner.run(unit_sums(self.classifier, self.x_all, unit), v_now, len(units))
                self.image_passes += unit.image_rows
                hits_by_class = torch.zeros((a, self.K + 1), device=self.device, dtype=self.dtype).scatter_(
                    1, unit.source_of_slot, hits.view(a, slots))[:, :self.K]
                self.step(unit, v_now, self.observed_fractions(unit, hits_by_class * self.inv_counts),
                          grads.view((a, slots) + self.pixel_shape), not self.started)
            self.started = True
            done_rounds += 1
            still = [i for i in active if i not in self.results]
            if still != active or self.relayout_each_iteration:
                active = still
                units = self.lay_out(active) if active else []
                runner.new_layout()
            if progress is not None:
                progress(max(self.iterations, default=0), len(self.results), n)

    def lay_out(self, active: list[int]) -> list[Unit]:
        """The units of one iteration over the jobs ``active`` (engine_passes.lay_out)."""
        return lay_out(active, self.jobs, self.batch, self.targets, self.y_all, self.K, self.device)

    def observed_fractions(self, unit: Unit, q: torch.Tensor) -> torch.Tensor:
        """q_st (a, K) of the unit's jobs at their v, from this iteration's passes: here every source's
        (the sampled engine fills the classes it did not draw from earlier passes)."""
        return q

    def per_source(self, w: torch.Tensor, index: torch.Tensor | slice | int) -> torch.Tensor:
        """Each source's coefficient on its summed gradient in grad_v J_t: w_s / |D_s|, times the
        sampled engine's importance weight of its draw (``source_scale``) where there is one;
        ``index`` the jobs whose weights ``w`` are."""
        coefficient = w * self.inv_counts
        return coefficient if self.source_scale is None else coefficient * self.source_scale[index]

    # -- lines 5-12, then line 4, for the jobs of a unit at once ------------------------------

    def step(self, unit: Unit, v_now: torch.Tensor, q: torch.Tensor, grads: torch.Tensor,
             first_iteration: bool) -> None:
        """Lines 5-12 and then line 4 for the unit's jobs at once, with one transfer to the host.
        ``q`` (a, K) is q_st at v(tau+1); ``grads`` (a, slots, *pixel_shape) the summed gradients
        of log p(t | [x + v]_c) per source slot. The step is computed for every job before
        knowing which ones reach pi or their last iteration; those are then redone one by one by
        advance(), from the unchanged state."""
        w_now = self.w[unit.index]
        fraction = (w_now * q).sum(dim=1)                                  # Q_t(v(tau+1), w(tau))
        w_next, crossings = self._next_weights(unit, q, fraction, w_now, first_iteration)
        per_class = torch.nn.functional.pad(self.per_source(w_next, unit.index), (0, 1))  # column K: padding slots
        coefficient = per_class.gather(1, unit.source_of_slot).reshape(
            unit.source_of_slot.shape + (1,) * len(self.pixel_shape))
        gradient = (coefficient * grads).sum(dim=1)                        # grad_v J_t(v, w)
        # what the host needs: Q_t, ||grad||, and only where used, ||w(tau+1) - w(tau)||_1 and ||v||
        wanted = [fraction, torch.linalg.vector_norm(gradient.flatten(1), dim=1)]
        if self.schedule.needs_weight_change:
            wanted.append(torch.linalg.vector_norm(w_next - w_now, ord=1, dim=1))
        if self.schedule.needs_pattern_norm:
            wanted.append(torch.linalg.vector_norm(v_now.flatten(1), dim=1))
        on_host = torch.stack(wanted).cpu().numpy().astype(np.float64)
        moving, scales = [], []
        for p in range(len(unit.members)):
            length = self._plan(unit, p, on_host[:, p], q, grads, w_next, crossings[p], first_iteration)
            if length is not None:
                moving.append(p)
                scales.append(length / on_host[1, p])
        if moving:
            self._move(unit, moving, scales, v_now, q, w_next, gradient)

    def _next_weights(self, unit: Unit, q: torch.Tensor, fraction: torch.Tensor, w_now: torch.Tensor,
                      first_iteration: bool) -> tuple[torch.Tensor, list[Crossing]]:
        """w(tau+1) by eqs. (7)-(8), as the schedule updates it, for the unit's adapting jobs."""
        adapting = [self.jobs[i].adapt_weights for i in unit.members]
        if first_iteration or not any(adapting):
            return w_now, [None] * len(unit.members)
        w_next, crossings = self.schedule.next_weights(self, unit.members, q, fraction, w_now,
                                                       self.excluded[unit.index])
        if not all(adapting):
            w_next = torch.where(self.adapts[unit.index][:, None], w_next, w_now)
        return w_next, crossings

    def _plan(self, unit: Unit, p: int, on_host: np.ndarray, q: torch.Tensor, grads: torch.Tensor,
              w_next: torch.Tensor, crossing: Crossing, first_iteration: bool) -> float | None:
        """The step length for the unit's p-th job, or None when it does not take the batched
        step (it finished, was redone by advance(), or its schedule moved it)."""
        i, f, g = unit.members[p], on_host[0], on_host[1]
        if f > 0 and not self.misclassified[i]:
            self.misclassified[i] = True
            if not first_iteration and self.schedule.on_first_misclassification(self, i):
                return None
        if not first_iteration and (f >= self.pi or self.iterations[i] >= self.max_iterations):
            by_class = torch.zeros((self.K + 1,) + self.pixel_shape, device=self.device, dtype=self.dtype)
            self.advance(i, q[p], by_class.index_add_(0, unit.source_of_slot[p], grads[p])[:self.K])
            return None
        if crossing is not None and self.schedule.stop_within_last_step(self, i, q[p], *crossing):
            return None
        if not first_iteration and self.jobs[i].adapt_weights and self.schedule.needs_weight_change:
            self.schedule.control_step(self, i, on_host[2], f)
        if not np.isfinite(g) or g == 0.0:
            self.w[i] = w_next[p]
            self.finish(i, q[p], float(f), STATUS_ZERO_GRADIENT)
            return None
        length = self.schedule.step_length(self.step_length[i],
                                           on_host[-1] if self.schedule.needs_pattern_norm else None)
        self.last_length[i] = length
        self.update_span[i] = length
        self.iterations[i] += 1
        return length

    def _move(self, unit: Unit, moving: list[int], scales: list[float], v_now: torch.Tensor, q: torch.Tensor,
              w_next: torch.Tensor, gradient: torch.Tensor) -> None:
        """Line 4 (eq. (5)) for the unit's jobs ``moving`` (positions), with w(tau+1); ``scales``
        their step length / ||grad||."""
        index = unit.index
        scale = torch.as_tensor(scales, dtype=self.dtype).to(self.device, non_blocking=True).reshape(
            (-1,) + (1,) * len(self.pixel_shape))
        if len(moving) < len(unit.members):      # some jobs stopped: move the others only
            where = torch.as_tensor(moving, device=self.device)
            index = torch.as_tensor([unit.members[p] for p in moving], device=self.device)
            v_now, w_next, gradient, q = v_now[where], w_next[where], gradient[where], q[where]
        last = scale * gradient                                             # eq. (5)
        self.w[index] = w_next
        self.q_before[index] = q
        self.last_step[index] = last
        self.v[index] = v_now + last

    # -- lines 5-12, then line 4, for one job ------------------------------------------------

    def advance(self, i: int, q: torch.Tensor, grad_by_source: torch.Tensor) -> None:
        """Lines 5-12 for job i at v(tau+1), then line 4 of the next iteration: the path of a job
        that reached pi or its last iteration (the others take the batched step, which does the
        same arithmetic for many jobs at once). ``grad_by_source`` (K, *pixel_shape)."""
        fraction = float((self.w[i] * q).sum())
        if self.iterations[i] > 0:                 # line 5: no check before the first step
            if fraction >= self.pi:
                checked = self._check_crossing(i, q, fraction)
                if checked is None:
                    return
                q, fraction = checked
            if self.iterations[i] >= self.max_iterations:
                self.finish(i, q, fraction, STATUS_MAX_ITERATIONS)
                return
            if self.jobs[i].adapt_weights and not self._update_weights(i, q, fraction):
                return
        coefficient = self.per_source(self.w[i], i).reshape((self.K,) + (1,) * len(self.pixel_shape))
        gradient = (coefficient * grad_by_source).sum(dim=0)              # grad_v J_t(v, w)
        norm = torch.linalg.vector_norm(gradient)
        if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
            self.finish(i, q, fraction, STATUS_ZERO_GRADIENT)
            return
        length = self.schedule.step_length(
            self.step_length[i],
            float(torch.linalg.vector_norm(self.v[i])) if self.schedule.needs_pattern_norm else None)
        self.last_step[i] = length * gradient / norm                      # eq. (5)
        self.last_length[i] = length
        self.update_span[i] = length
        self.q_before[i] = q
        self.v[i] = self.v[i] + self.last_step[i]
        self.iterations[i] += 1

    def _check_crossing(self, i: int, q: torch.Tensor, fraction: float) -> tuple[torch.Tensor, float] | None:
        """Line 5 passed for job i: bisect the crossing step when the schedule asks, then accept
        (None: finished) or, if onnxruntime disagrees, go on with (q, Q_t) at v."""
        resolution = self.schedule.crossing_resolution
        if resolution is not None and resolution < self.last_length[i]:
            refined = self.refine_crossing(i)
            if refined is not None:
                q, fraction = refined, float((self.w[i] * refined).sum())
        if self.accepts(i, self.v[i], self.w[i]):
            self.finish(i, q, fraction, STATUS_CONVERGED)
            return None
        self.rejections[i] += 1
        first = self.first_rejection[i]
        if first is None:
            first = self.first_rejection[i] = self.iterations[i]
        if self.iterations[i] - first >= self.max_rejected_iterations:
            self.finish(i, q, fraction, STATUS_UNVERIFIED)
            return None
        return q, fraction

    def _update_weights(self, i: int, q: torch.Tensor, fraction: float) -> bool:
        """Lines 7-12 for job i (as its schedule updates w); False when the job stopped inside
        its last step instead."""
        updated, (crossing,) = self.schedule.next_weights(
            self, [i], q[None], torch.as_tensor([fraction], device=self.device, dtype=self.dtype),
            self.w[i][None], self.excluded[i][None])
        updated = updated[0]
        if crossing is not None and self.schedule.stop_within_last_step(self, i, q, *crossing):
            return False
        if self.schedule.needs_weight_change:
            self.schedule.control_step(self, i, float(torch.linalg.vector_norm(updated - self.w[i], ord=1)),
                                       fraction)
        self.w[i] = updated
        return True

    # -- what the schedules use --------------------------------------------------------------

    def finish(self, i: int, q_row: torch.Tensor, fraction: float, status: str) -> None:
        """Record job i's result at its current v and w."""
        job = self.jobs[i]
        self.results[i] = PatternEstimate(
            target_class=job.target, pattern=self.v[i].detach().cpu().numpy().copy(),
            iterations=self.iterations[i], misclassification=q_row.detach().cpu().double().numpy(),
            source_weights=self.w[i].detach().cpu().double().numpy(), fraction=fraction,
            status=status, check_rejections=self.rejections[i], sources=job.sources)

    def accepts(self, i: int, pattern: torch.Tensor, weights: torch.Tensor) -> bool:
        """Whether ``confirm`` (onnxruntime) agrees that job i reaches pi at ``pattern``."""
        if self.confirm is None:
            return True
        return bool(self.confirm([self.jobs[i].target], pattern[None].cpu().numpy(),
                                 weights[None].cpu().numpy())[0])

    def fractions_at(self, i: int, pattern: torch.Tensor) -> torch.Tensor:
        """q_st for job i at ``pattern``: a forward pass without gradients."""
        return self.fractions_on(self.batch.rows[i], self.jobs[i].target, pattern)

    def fractions_on(self, rows: torch.Tensor, target: int, pattern: torch.Tensor) -> torch.Tensor:
        """q_st (K,) for target ``target`` at ``pattern``, from the image ``rows`` alone (classes
        without a row read 0): forward passes without gradients, ``batch_images`` rows at a time."""
        q = torch.zeros(self.K, device=self.device, dtype=self.dtype)
        step = self.batch.batch_images
        with torch.no_grad():
            for start in range(0, rows.numel(), step):
                idx = rows[start:start + step]
                self.forward_images += int(idx.numel())
                predicted = self.classifier.scores(clip_pixels(self.x_all[idx] + pattern)).argmax(dim=1)
                q.index_add_(0, self.y_all[idx], (predicted == target).to(self.dtype))
        return q * self.inv_counts

    def bisect_last_step(self, i: int, length: float, reached: Callable[[torch.Tensor], bool]
                         ) -> tuple[float, float, torch.Tensor | None]:
        """Shortest fraction of job i's last step (of the given length) whose point still
        satisfies ``reached(q_st there)``, to within the schedule's crossing resolution
        (bisection, no gradients): (the bracket's low and high fractions, q_st at high, or None
        when no midpoint was tried)."""
        resolution = self.schedule.crossing_resolution
        assert resolution is not None, "bisection needs the schedule's crossing_resolution"
        start, step = self.v[i] - self.last_step[i], self.last_step[i]
        low, high = 0.0, 1.0
        q_high = None
        while (high - low) * length > resolution:
            middle = 0.5 * (low + high)
            q_mid = self.fractions_at(i, start + middle * step)
            if reached(q_mid):
                high, q_high = middle, q_mid
            else:
                low = middle
        return low, high, q_high

    def refine_crossing(self, i: int) -> torch.Tensor | None:
        """Move v to the shortest fraction of the last step that still reaches pi (bisection);
        returns q there (None when no shorter point was tried). The last step is left as it was."""
        _, high, q_high = self.bisect_last_step(i, float(torch.linalg.vector_norm(self.last_step[i])),
                                                lambda q: float((self.w[i] * q).sum()) >= self.pi)
        if q_high is not None:
            self.v[i] = self.v[i] - self.last_step[i] + high * self.last_step[i]
        return q_high

    def shorten_last_step(self, i: int, fraction: float) -> None:
        """Cut job i's last step back to ``fraction`` of itself (v moves back with it)."""
        start = self.v[i] - self.last_step[i]
        self.last_step[i] = fraction * self.last_step[i]
        self.last_length[i] = fraction * self.last_length[i]
        self.v[i] = start + self.last_step[i]
