"""Mask and pattern estimation for patch (perceptible) triggers, every putative target at once.

A patch trigger replaces pixels (App. A.3, eq. (13))::

    x' = (1 - m) * x + m * u,   m in [0, 1]^(H x W) shared over channels, u in [0, 1]^(H x W x C)

For each job (putative target t, its source classes, whether w adapts) this engine solves the
weighted form of eq. (14)/(15) that App. A.3 proposes, the analogue of eq. (3)::

    minimize ||m||_1  subject to  Q_t(m, u, w) = sum_{s != t} w_s q_st(m, u) >= pi

the way Neural Cleanse (Wang et al., S&P 2019, Sec. IV.C) solves eq. (14): m and u are
reparameterized through tanh, m = (tanh(a) + 1) / 2 and u = (tanh(b) + 1) / 2, so they stay in
[0, 1] without clipping, and Adam (lr 0.1, betas (0.5, 0.9)) minimizes

    L = - sum_{s != t} w_s mean_{x in D_s} log p(t | x') + lambda_t ||m||_1

with the cost lambda_t adapted as Neural Cleanse adapts it (0 until Q_t >= pi has held for
PATIENCE iterations, then 1e-3, raised x1.5 after PATIENCE iterations at Q_t >= pi, lowered
/1.5^1.5 after PATIENCE iterations below). With ``adapt_weights`` (lred-patch) w moves by
eqs. (7)-(8) after every iteration (weights.update_weights); without it (Neural Cleanse) w stays
uniform over the sources. The smallest ||m||_1 whose Q_t >= pi onnxruntime confirms is kept
(``confirm``); a job stops when that has not shrunk by 1% for EARLY_STOP_PATIENCE iterations
after lambda has gone both up and down, or at ``max_iterations``. Every unfinished job's
images go through the model in one batched forward/backward per iteration, at most
``batch_images`` rows at a time (estimation.PairBatch). docs/method.md "Patch triggers".
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .estimation import (
    STATUS_CONVERGED,
    STATUS_MAX_ITERATIONS,
    STATUS_UNVERIFIED,
    DifferentiableClassifier,
    PairBatch,
    PatternEstimate,
    Progress,
)
from .jobs import Job
from .weights import uniform_weights, update_weights

LEARNING_RATE = 0.1            # Neural Cleanse's Adam settings
ADAM_BETAS = (0.5, 0.9)
INITIAL_COST = 1e-3            # lambda once Q_t >= pi has held for PATIENCE iterations
COST_UP, COST_DOWN = 1.5, 1.5 ** 1.5
PATIENCE = 5
EARLY_STOP_PATIENCE = 5 * PATIENCE
SMALL_START = 0.02             # lred-patch's starting mask value (Neural Cleanse: random)
EARLY_STOP_GAIN = 0.99         # an improvement is a best ||m||_1 below 0.99 of the previous one

# confirm(targets, masked images (k, *pixel_shape) per job as (mask, pattern) pairs, weights) -> accepted
PatchConfirm = Callable[[Sequence[int], np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class PatchEstimate(PatternEstimate):
    """A PatternEstimate for a patch trigger: ``pattern`` is u (pixel space, model layout, the
    whole pattern, not masked); ``mask`` is m (H, W) in [0, 1]; ``pattern_norm`` is the statistic's
    norm ||m||_1 (App. A.3), so the test of Sec. 3.2 and the evidence rule read it unchanged."""

    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    mask_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # m in model layout

    @property
    def pattern_norm(self) -> float:
        return float(np.abs(self.mask.astype(np.float64)).sum())

    @property
    def masked_pattern(self) -> np.ndarray:
        """m * u in model layout (what the trigger writes into an image)."""
        return (self.mask_pixels * self.pattern).astype(np.float32)


def patched(pixels: np.ndarray, mask_pixels: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Eq. (13): (1 - m) x + m u for clean ``pixels`` (n, *pixel_shape); float32."""
    return ((1.0 - mask_pixels) * pixels + mask_pixels * pattern).astype(np.float32)


class PatchEngine:
    """Mask/pattern estimation for ``jobs`` on ``pixels`` (M, *pixel_shape) in [0, 1] with
    ``labels`` (M,); ``to_layout`` maps (n, H, W, C) tensors to the model's pixel layout."""

    def __init__(self, classifier: DifferentiableClassifier, pixels: torch.Tensor, labels: torch.Tensor,
                 num_classes: int, jobs: Sequence[Job], image_shape: tuple[int, int, int],
                 to_layout: Callable[[torch.Tensor], torch.Tensor], *, pi: float, max_iterations: int,
                 batch_images: int, seed: int = 0, confirm: PatchConfirm | None = None, shift: int = 0,
                 images_hwc: torch.Tensor | None = None):
        self.classifier, self.jobs, self.pi = classifier, list(jobs), pi
        self.max_iterations, self.confirm, self.to_layout = max_iterations, confirm, to_layout
        device = self.device = classifier.device
        self.x, self.y = pixels.to(device), labels.to(device)
        self.K, self.image_shape = num_classes, image_shape
        dtype = self.x.dtype
        counts = torch.bincount(self.y, minlength=num_classes).to(dtype)
        self.inv_counts = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
        self.batch = PairBatch(self.y, [j.sources for j in self.jobs], batch_images)
        n, (h, w, _) = len(self.jobs), image_shape
        generator = torch.Generator().manual_seed(seed)
        # Neural Cleanse starts m and u at random in (0, 1); a job whose w adapts starts from a
        # nearly empty mask (m = SMALL_START), as Algorithm 1 starts from v = 0, so that w(0) is
        # uniform while Q_t is still near 0 and its classes gain weight as they begin to flip
        start_mask = torch.rand((n, h, w), generator=generator, dtype=dtype) * 0.98 + 0.01
        adapting = torch.as_tensor([j.adapt_weights for j in self.jobs])
        start_mask[adapting] = SMALL_START
        start_pattern = torch.rand((n,) + tuple(self.x.shape[1:]), generator=generator, dtype=dtype) * 0.98 + 0.01
        self.mask_param = torch.atanh(2 * start_mask - 1).to(device).requires_grad_(True)
        self.pattern_param = torch.atanh(2 * start_pattern - 1).to(device).requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.mask_param, self.pattern_param], lr=LEARNING_RATE,
                                          betas=ADAM_BETAS)
        self.w = torch.as_tensor(np.stack([uniform_weights(num_classes, j.target, j.sources) for j in self.jobs]),
                                 device=device, dtype=dtype)
        self.excluded = torch.ones((n, num_classes), dtype=torch.bool, device=device)
        for i, j in enumerate(self.jobs):
            self.excluded[i, list(j.sources)] = False
        self.targets = torch.as_tensor([j.target for j in self.jobs], device=device)
        self.cost = [0.0] * n
        self.counters = np.zeros((n, 3), dtype=np.int64)     # cost set, cost up, cost down counters
        self.flags = np.zeros((n, 2), dtype=bool)             # cost went up, cost went down
        self.best: list[dict | None] = [None] * n             # smallest confirmed ||m||_1 so far
        self.best_norm = [np.inf] * n
        self.since_gain = [0] * n                              # iterations since a 1% gain
        self.gain_norm = [np.inf] * n
        self.reached = [False] * n                             # torch saw Q_t >= pi at some point
        self.rejections = [0] * n
        self.iterations = [0] * n
        # --patch-shift: ``images_hwc``, the same clean images as (M, H, W, C), shifted anew for every
        # row of every pass
        self.shift = shift
        if shift > 0:
            if images_hwc is None:
                raise ValueError("a shift needs the clean images as (M, H, W, C) (images_hwc)")
            self.x_hwc = images_hwc.to(device)
            self.shift_generator = torch.Generator().manual_seed(seed + 1)
        self.results: dict[int, PatchEstimate] = {}
        self.image_passes = 0                                  # image rows through forward+backward

    def masks(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m (k, H, W), u (k, *pixel_shape)) of the jobs ``index``, in [0, 1] (tanh reparameterization)."""
        return (torch.tanh(self.mask_param[index]) + 1) / 2, (torch.tanh(self.pattern_param[index]) + 1) / 2

    def expand(self, mask: torch.Tensor) -> torch.Tensor:
        """(k, H, W) masks -> (k, *pixel_shape): the same m on every channel."""
        return self.to_layout(mask[..., None].expand(mask.shape + (self.image_shape[2],)))

    def shifted(self, rows: torch.Tensor) -> torch.Tensor:
        """The clean images ``rows``, each moved by its own random (dy, dx) in -shift..shift along
        the image axes, zero filled where it left the frame; model layout."""
        k, p = rows.numel(), self.shift
        h, w = self.image_shape[0], self.image_shape[1]
        moves = torch.randint(-p, p + 1, (2, k), generator=self.shift_generator).to(self.device)
        padded = torch.nn.functional.pad(self.x_hwc[rows], (0, 0, p, p, p, p))     # (k, H + 2p, W + 2p, C)
        iy = torch.arange(h, device=self.device)[None, :] + p - moves[0][:, None]    # row of output pixel (y, x)
        ix = torch.arange(w, device=self.device)[None, :] + p - moves[1][:, None]
        which = torch.arange(k, device=self.device)[:, None, None]
        return self.to_layout(padded[which, iy[:, :, None], ix[:, None, :]])

    def run(self, progress: Progress | None = None) -> list[PatchEstimate]:
        """Iterate until every job is finished; one PatchEstimate per job, in job order."""
        active = list(range(len(self.jobs)))
        while active:
            hits = self._passes(active)
            self._after_step(active, hits)
            active = [i for i in active if i not in self.results]
            if progress is not None:
                progress(max(self.iterations), len(self.results), len(self.jobs))
        return [self.results[i] for i in range(len(self.jobs))]

    def _passes(self, active: list[int]) -> torch.Tensor:
        """One Adam step for the ``active`` jobs: forward/backward over their images in chunks, the
        l1 cost, the step. Returns the hits q_st numerators (len(jobs), K) at the point stepped from."""
        hits = torch.zeros((len(self.jobs), self.K), device=self.device, dtype=self.x.dtype)
        self.optimizer.zero_grad(set_to_none=False)
        for group in self.batch.chunks(active):
            rows_image = torch.cat([idx for _, idx in group]).to(self.device)
            rows_job = torch.cat([torch.full((idx.numel(),), i, dtype=torch.long) for i, idx in group]).to(self.device)
            self.image_passes += int(rows_image.numel())
            with torch.enable_grad():
                mask, pattern = self.masks(rows_job)
                m = self.expand(mask)
                clean = self.x[rows_image] if self.shift == 0 else self.shifted(rows_image)
                scores = self.classifier.scores((1 - m) * clean + m * pattern)                  # eq. (13)
                target = self.targets[rows_job]
                log_p = self.classifier.log_posterior(scores).gather(1, target[:, None])[:, 0]
                labels = self.y[rows_image]
                coefficient = self.w[rows_job, labels] * self.inv_counts[labels]
                (-(coefficient * log_p).sum()).backward()                                  # -J_t
            hit = (scores.detach().argmax(dim=1) == target).to(hits.dtype)
            hits.index_put_((rows_job, labels), hit, accumulate=True)
        index = torch.as_tensor(active, device=self.device)
        cost = torch.as_tensor([self.cost[i] for i in active], device=self.device, dtype=self.x.dtype)
        with torch.enable_grad():
            mask, _ = self.masks(index)
            (cost * mask.flatten(1).sum(dim=1)).sum().backward()                            # lambda ||m||_1
        self._before = [t.detach().clone() for t in self.masks(index)]
        self.optimizer.step()
        return hits * self.inv_counts

    def _after_step(self, active: list[int], q_all: torch.Tensor) -> None:
        """The stopping check, the confirmation of a new smallest mask, eqs. (7)-(8), lambda."""
        mask_before, pattern_before = self._before
        index = torch.as_tensor(active, device=self.device)
        q = q_all[index]
        fraction = (self.w[index] * q).sum(dim=1)                          # Q_t(m, u, w(tau))
        norms = mask_before.flatten(1).sum(dim=1)
        on_host = torch.stack([fraction, norms]).cpu().double().numpy()
        candidates = [p for p, i in enumerate(active)
                      if on_host[0, p] >= self.pi and on_host[1, p] < self.best_norm[i]]
        if candidates:
            accepted = self._confirm(active, candidates, mask_before, pattern_before)
            for p, ok in zip(candidates, accepted):
                i = active[p]
                self.reached[i] = True
                if not ok:
                    self.rejections[i] += 1
                    continue
                self.best_norm[i] = float(on_host[1, p])
                self.best[i] = dict(mask=mask_before[p].cpu().numpy().copy(),
                                    pattern=pattern_before[p].cpu().numpy().copy(),
                                    q=q[p].cpu().double().numpy(), w=self.w[i].cpu().double().numpy(),
                                    fraction=float(on_host[0, p]), iteration=self.iterations[i] + 1)
        adapting = torch.as_tensor([self.jobs[i].adapt_weights for i in active], device=self.device)
        if bool(adapting.any()):                                           # eqs. (7)-(8), line 12
            updated = update_weights(q, fraction, self.excluded[index])
            self.w[index] = torch.where(adapting[:, None], updated, self.w[index])
        for p, i in enumerate(active):
            self.iterations[i] += 1
            self._adapt_cost(i, bool(on_host[0, p] >= self.pi))
            if self.best_norm[i] < EARLY_STOP_GAIN * self.gain_norm[i]:
                self.gain_norm[i], self.since_gain[i] = self.best_norm[i], 0
            elif np.isfinite(self.best_norm[i]):
                self.since_gain[i] += 1
            plateau = self.since_gain[i] >= EARLY_STOP_PATIENCE and bool(self.flags[i].all())
            if plateau or self.iterations[i] >= self.max_iterations:
                self._finish(i, plateau or self.since_gain[i] >= EARLY_STOP_PATIENCE)

    def _adapt_cost(self, i: int, success: bool) -> None:
        """Neural Cleanse's schedule of lambda (module docstring), with Q_t >= pi as success."""
        counters, flags = self.counters[i], self.flags[i]
        if self.cost[i] == 0.0:
            counters[0] = counters[0] + 1 if success else 0
            if counters[0] >= (1 if self.jobs[i].adapt_weights else PATIENCE):
                self.cost[i] = INITIAL_COST
                counters[:] = 0
            return
        counters[1], counters[2] = (counters[1] + 1, 0) if success else (0, counters[2] + 1)
        if counters[1] >= PATIENCE:
            counters[1] = 0
            self.cost[i] *= COST_UP
            flags[0] = True
        elif counters[2] >= PATIENCE:
            counters[2] = 0
            self.cost[i] /= COST_DOWN
            flags[1] = True

    def _confirm(self, active: list[int], candidates: list[int], mask: torch.Tensor,
                 pattern: torch.Tensor) -> np.ndarray:
        if self.confirm is None:
            return np.ones(len(candidates), dtype=bool)
        where = torch.as_tensor(candidates, device=self.device)
        return self.confirm([self.jobs[active[p]].target for p in candidates],
                            self.expand(mask[where]).cpu().numpy(), pattern[where].cpu().numpy(),
                            np.stack([self.w[active[p]].cpu().double().numpy() for p in candidates]))

    def _finish(self, i: int, settled: bool) -> None:
        """Job i's result: its smallest confirmed mask (converged when the search settled), or where
        it stands (max_iterations; unverified when torch reached pi and onnxruntime never agreed)."""
        job, best = self.jobs[i], self.best[i]
        if best is None:
            with torch.no_grad():
                mask, pattern = (t[0] for t in self.masks(torch.as_tensor([i], device=self.device)))
            best = dict(mask=mask.cpu().numpy(), pattern=pattern.cpu().numpy(), q=np.zeros(self.K),
                        w=self.w[i].cpu().double().numpy(), fraction=0.0, iteration=self.iterations[i])
            status = STATUS_UNVERIFIED if self.reached[i] else STATUS_MAX_ITERATIONS
        else:
            status = STATUS_CONVERGED if settled else STATUS_MAX_ITERATIONS
        mask_pixels = self.expand(torch.as_tensor(best["mask"])[None])[0].numpy()
        self.results[i] = PatchEstimate(
            target_class=job.target, pattern=best["pattern"].astype(np.float32), iterations=self.iterations[i],
            misclassification=best["q"], source_weights=best["w"], fraction=float(best["fraction"]),
            status=status, check_rejections=self.rejections[i], sources=job.sources,
            mask=best["mask"].astype(np.float32), mask_pixels=np.ascontiguousarray(mask_pixels, dtype=np.float32))
