"""Sampled sources (``--sample-sources M``): Algorithm 1 for every target, with each iteration's
gradient of J_t estimated from M source classes drawn by the current weights w.

The full method evaluates, per target and iteration, all (K-1)N images of the other classes:
K(K-1)N image passes per iteration. But J_t(v, w) = sum_s w_s mean_{x in D_s} log p(t | [x + v]_c)
(eq. (5)) is an expectation over s ~ w, so its gradient has an unbiased estimate from M classes
drawn from w with replacement: (1/M) sum_m grad mean_{x in D_{s_m}} log p(t | [x + v]_c), each
distinct class evaluated once and counted as often as it was drawn. While w is uniform this is a
random M of the K-1 classes; once eqs. (7)-(8) concentrate w on a few sources, the draws are
those sources and the estimate is (nearly) the full gradient. A pass evaluates at most M classes
per target: KMN image passes per iteration instead of K(K-1)N. Eq. (5) normalizes the gradient,
so only its direction matters.

What is estimated and what is exact:

- The gradient of line 4: the importance-weighted draw above. The draws use w(tau); the engine
  combines them with w(tau+1) (engine.py), so each drawn class s carries the factor
  count_s / (M w_s(tau)) (``Engine.source_scale``), which keeps the estimate unbiased.
- q_st, which eqs. (7)-(8) and the check of line 5 need for every source: the drawn classes' are
  measured at the current v; the others keep the value of their last measurement, and every
  ``refresh_every`` iterations of a job all of its q_st are measured afresh by a forward pass
  without gradients (and before its first step).
- Line 5: when Q_t >= pi with those q_st, or when the draws estimate Q_t >= pi (their
  importance-weighted mean of q_st, unbiased), every q_st is measured at v before the check, and
  the job goes on if Q_t < pi there. Acceptance then asks onnxruntime as always.
  Bisection of a crossing step and the first-misclassification step measure every source.
- Bisection of a step (the crossing, the first misclassification) evaluates only the images
  of the classes whose q_st differ between the step's start and end (``bisect_last_step``).
- Each job draws from its own generator, seeded by the scan's seed and its target, so a job's
  path does not depend on the jobs run beside it (the cluster split, docs/cluster.md).

This departs from Algorithm 1 (a stochastic gradient instead of the exact one), is off by
default, and is recorded in the report (docs/scale.md measures it against the full method).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .clipping import clip_pixels
from .engine import Engine
from .engine_passes import Unit, lay_out
from .estimation import STATUS_CONVERGED, STATUS_ZERO_GRADIENT, PairBatch
from .weights import Job


class SampledEngine(Engine):
    """The engine with each iteration's sources drawn by w (module docstring). ``draws`` is M,
    ``refresh_every`` the iterations between two measurements of every q_st of a job."""

    relayout_each_iteration = True

    def __init__(self, *args: object, draws: int, refresh_every: int, seed: int, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if draws < 1 or refresh_every < 1:
            raise ValueError("draws and refresh_every must be >= 1")
        self.draws, self.refresh_every = draws, refresh_every
        n = len(self.jobs)
        self.generators = [np.random.default_rng([seed, 19, job.target]) for job in self.jobs]
        self.q_known = torch.zeros((n, self.K), device=self.device, dtype=self.dtype)  # last measured q_st
        self.since_refresh = [refresh_every] * n       # a job's q_st are all measured before its first step
        self.draw_scale = torch.zeros((n, self.K), device=self.device, dtype=self.dtype)   # count_s / (M w_s)
        self.source_scale = self.draw_scale             # the engine's factor on w_s: the same tensor
        self.rows_of_class = [torch.nonzero(self.y_all == c).flatten() for c in range(self.K)]
        self.bisecting: tuple[int, torch.Tensor, torch.Tensor] | None = None   # (job, classes, q_st at the end)

    # -- the draws ------------------------------------------------------------------------

    def lay_out(self, active: list[int]) -> list[Unit]:
        """This iteration's units: refresh the q_st that are due, then draw each active job's sources."""
        due = [i for i in active if self.since_refresh[i] >= self.refresh_every]
        if due:
            self.measure_all(due)
        drawn: list[Sequence[int]] = [()] * len(self.jobs)
        weights = self.w[active].detach().double().cpu().numpy() if active else np.zeros((0, self.K))
        scale = np.zeros((len(active), self.K))
        for p, i in enumerate(active):
            w = weights[p]
            counts = self.generators[i].multinomial(self.draws, w / w.sum())
            classes = np.flatnonzero(counts)
            scale[p, classes] = counts[classes] / (self.draws * w[classes])
            drawn[i] = tuple(int(s) for s in classes)
            self.since_refresh[i] += 1
        if active:
            self.draw_scale[active] = torch.as_tensor(scale, dtype=self.dtype).to(self.device)
        jobs = [Job(job.target, tuple(drawn[i]), job.adapt_weights) for i, job in enumerate(self.jobs)]
        batch = PairBatch(self.y_all, [job.sources for job in jobs], self.batch.batch_images)
        return lay_out(active, jobs, batch, self.targets, self.y_all, self.K, self.device)

    def observed_fractions(self, unit: Unit, q: torch.Tensor) -> torch.Tensor:
        """The drawn classes' q_st as measured now, the others' as last measured; every q_st of a
        job is measured now when its draws estimate Q_t >= pi but the remembered q_st do not (the
        draws estimate Q_t = sum_s w_s q_st without bias, so line 5 is not passed over)."""
        drawn = torch.zeros((q.shape[0], self.K + 1), dtype=torch.bool, device=self.device).scatter_(
            1, unit.source_of_slot, True)[:, :self.K]
        merged = torch.where(drawn, q, self.q_known[unit.index])
        w = self.w[unit.index]
        from_draws = (w * self.draw_scale[unit.index] * q).sum(dim=1)
        behind = ((from_draws >= self.pi) & ((w * merged).sum(dim=1) < self.pi)).tolist()
        for p in (p for p, late in enumerate(behind) if late):
            i = unit.members[p]
            merged[p] = self.fractions_at(i, self.v[i])
            self.since_refresh[i] = 0
        self.q_known[unit.index] = merged
        return merged

    def measure_all(self, jobs: Sequence[int]) -> None:
        """Every q_st of ``jobs`` at their current v: forward passes without gradients over all
        their sources' images (counted in ``forward_images``)."""
        hits = torch.zeros((len(self.jobs), self.K), device=self.device, dtype=self.dtype)
        with torch.no_grad():
            for group in self.batch.chunks(list(jobs)):
                rows = torch.cat([idx for _, idx in group])
                owner = torch.cat([torch.full((idx.numel(),), i, device=self.device, dtype=torch.long)
                                   for i, idx in group])
                predicted = self.classifier.scores(clip_pixels(self.x_all[rows] + self.v[owner])).argmax(dim=1)
                hits.index_put_((owner, self.y_all[rows]), (predicted == self.targets[owner]).to(self.dtype),
                                accumulate=True)
                self.forward_images += int(rows.numel())
        index = torch.as_tensor(list(jobs), device=self.device)
        self.q_known[index] = hits[index] * self.inv_counts
        for i in jobs:
            self.since_refresh[i] = 0

    # -- bisection over the classes that changed -------------------------------------------

    def bisect_last_step(self, i: int, length: float, reached: Callable[[torch.Tensor], bool]
                         ) -> tuple[float, float, torch.Tensor | None]:
        """The engine's bisection of job i's last step, evaluating only the images of the classes
        whose q_st differ between the step's start and its end: the others are taken to keep
        their value along the step (a class that changes and changes back within one step is
        not seen, as it is not seen by the step itself). Its cost is then the changed classes'
        images per evaluation instead of every source's."""
        changed = torch.nonzero(self.q_known[i] != self.q_before[i]).flatten()
        self.bisecting = (i, changed, self.q_known[i].clone())
        try:
            return super().bisect_last_step(i, length, reached)
        finally:
            self.bisecting = None

    def fractions_at(self, i: int, pattern: torch.Tensor) -> torch.Tensor:
        """q_st for job i at ``pattern`` (inside a bisection: the changed classes' alone)."""
        if self.bisecting is None or self.bisecting[0] != i:
            return super().fractions_at(i, pattern)
        _, changed, q = self.bisecting
        q = q.clone()
        if changed.numel() == 0:
            return q
        rows = torch.cat([self.rows_of_class[c] for c in changed.tolist()])
        q[changed] = self.fractions_on(rows, self.jobs[i].target, pattern)[changed]
        return q

    # -- line 5 on measured fractions ------------------------------------------------------

    def _check_crossing(self, i: int, q: torch.Tensor, fraction: float) -> tuple[torch.Tensor, float] | None:
        """Line 5 passed on partly remembered q_st: measure them all at v first; go on (no
        rejection counted) when Q_t < pi there, else check as the full method does."""
        measured = self.fractions_at(i, self.v[i])
        self.q_known[i] = measured
        self.since_refresh[i] = 0
        fraction = float((self.w[i] * measured).sum())
        if fraction < self.pi:
            return measured, fraction
        return super()._check_crossing(i, measured, fraction)

    def finish(self, i: int, q_row: torch.Tensor, fraction: float, status: str) -> None:
        """Record job i; a job that stops unconverged records its q_st measured at v. The draws'
        gradient can vanish where every drawn class already goes to t (log p(t) saturates): such
        a job is accepted as converged when its measured Q_t >= pi and onnxruntime agrees."""
        if status != STATUS_CONVERGED:
            q_row = self.fractions_at(i, self.v[i])
            fraction = float((self.w[i] * q_row).sum())
            if status == STATUS_ZERO_GRADIENT and fraction >= self.pi and self.accepts(i, self.v[i], self.w[i]):
                status = STATUS_CONVERGED
        super().finish(i, q_row, fraction, status)
