"""Step schedules: how long each step of eq. (5) is, and how w follows v.

The engine (``engine.py``) asks its schedule, per job and step, for the step length and for the
update of w; everything else (lines 4-12 of Algorithm 1, batching, the stopping check) is the
engine's. docs/method.md "Step schedule" and docs/benchmarks.md measure each schedule.

- ``FixedStep``: every step delta and one update of w by eqs. (7)-(8) per step: Algorithm 1 as
  written. Optionally the step that crosses pi is bisected (``crossing_resolution``).
- ``RelativeStep``: step max(delta, r * ||v||), so the path is resolved to the same relative
  precision at every scale.
- ``WeightControlledStep``: the scan's default; the step grows and shrinks with how much w moved,
  between delta and ``largest``, and w is updated as often per unit of path as Algorithm 1 with
  steps of ``weight_update_length`` would.

A schedule is a frozen value (``ScanConfig.schedule`` builds the scan's); the per-job state it
reads and changes (the job's current step length, its last step, ...) lives in the engine.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from .estimation import STATUS_CONVERGED
from .weights import repeat_weight_updates, update_weights

if TYPE_CHECKING:
    from .engine import Engine

# The weight-controlled step. A fixed normalized step lengthens v by a whole step between two
# updates of w; while w is still moving, part of that length goes to classes that lose their
# weight and stays in ||v_t||. So, per target, after each update of eqs. (7)-(8): halve the step
# (never below delta) when ||w(tau+1) - w(tau)||_1 > WEIGHT_CHANGE_SHRINK, and lengthen it by
# STEP_GROWTH (never above the largest step) when the change is below WEIGHT_CHANGE_GROW and
# Q_t > 0. Thresholds chosen in benchmarks/adaptive_step.py on the sample model
# (docs/benchmarks.md, "Prototype"); they are not tuned per model.
# Before the first misclassification (Q_t = 0 at every point so far) w stays w(0) (line 12), so
# nothing a long step could get wrong about the weights: the step grows by STEP_GROWTH there too,
# and the step on which Q_t first turns positive is bisected back to the first misclassified
# point (to within the crossing resolution); the step then restarts at delta, the state the
# schedule would have reached with steps of delta (docs/benchmarks.md, "Long steps before the
# first misclassification").
WEIGHT_CHANGE_SHRINK = 0.01
WEIGHT_CHANGE_GROW = 0.003
STEP_GROWTH = 1.25

# per job, where repeated updates of w would have stopped Algorithm 1 inside the last step:
# (its step k, the weights w there), or None (see repeat_weight_updates)
Crossing = tuple[int, np.ndarray] | None


class StepSchedule:
    """What every schedule answers; the defaults are Algorithm 1's (one update of w per step).

    ``delta`` is the smallest (or only) step length; ``crossing_resolution``, when set below the
    last step's length, has the engine bisect the step that first reaches Q_t >= pi, without
    gradients, to the shortest fraction of it (to within this length) that still reaches pi.
    ``needs_weight_change`` / ``needs_pattern_norm``: the engine reads ||w(tau+1) - w(tau)||_1 /
    ||v(tau)|| back with Q_t, for ``control_step`` / ``step_length``.
    """

    delta: float
    crossing_resolution: float | None
    needs_weight_change: ClassVar[bool] = False
    needs_pattern_norm: ClassVar[bool] = False

    def step_length(self, current: float, pattern_norm: float | None) -> float:
        """Length of the next step of eq. (5), given the job's ``current`` step length (delta
        unless ``control_step`` changed it) and ||v(tau)|| (None unless ``needs_pattern_norm``)."""
        return current

    def next_weights(self, engine: Engine, members: Sequence[int], q: torch.Tensor, fraction: torch.Tensor,
                     w_now: torch.Tensor, excluded: torch.Tensor) -> tuple[torch.Tensor, list[Crossing]]:
        """w(tau+1) for the jobs ``members`` at v(tau+1) (lines 7-12: eqs. (7)-(8) once), and per
        job where the update would have stopped Algorithm 1 inside the last step (None here).
        ``q`` (a, K) q_st, ``fraction`` (a,) Q_t(v(tau+1), w(tau)), ``w_now`` (a, K) w(tau)."""
        return update_weights(q, fraction, excluded), [None] * len(members)

    def control_step(self, engine: Engine, i: int, weight_change: float, fraction: float) -> None:
        """After job i's update of w (``weight_change`` = ||w(tau+1) - w(tau)||_1, ``fraction``
        Q_t): change its step length (only when ``needs_weight_change``)."""

    def on_first_misclassification(self, engine: Engine, i: int) -> bool:
        """Job i's last step, from a point where Q_t = 0, reached Q_t > 0. True when the
        schedule moved v back (the job then skips this iteration's step)."""
        return False

    def stop_within_last_step(self, engine: Engine, i: int, q_end: torch.Tensor, k: int,
                              w_check: np.ndarray) -> bool:
        """Stop job i inside its last step, where ``next_weights`` reported a crossing; True
        when it did. Only schedules that report crossings are asked."""
        return False


@dataclass(frozen=True)
class FixedStep(StepSchedule):
    """Every step delta, one update of w per step: Algorithm 1 (App. A.2) as written."""

    delta: float
    crossing_resolution: float | None = None


@dataclass(frozen=True)
class RelativeStep(StepSchedule):
    """Step length max(delta, relative * ||v(tau)||), one update of w per step."""

    delta: float
    relative: float
    crossing_resolution: float | None = None
    needs_pattern_norm: ClassVar[bool] = True

    def step_length(self, current: float, pattern_norm: float | None) -> float:
        assert pattern_norm is not None, "needs_pattern_norm: the engine passes ||v||"
        return max(self.delta, self.relative * pattern_norm)


@dataclass(frozen=True)
class WeightControlledStep(StepSchedule):
    """The scan's default: each job's step starts at delta and is controlled by the change of
    its weights (see WEIGHT_CHANGE_SHRINK), between ``delta`` and ``largest``; the crossing step
    is bisected to ``crossing_resolution`` (unset: delta), and so is the step on which Q_t first
    turns positive. ``weight_update_length`` (the paper's delta; unset: once per step): after a
    step of length h, w is updated by eqs. (7)-(8) round(h / weight_update_length) times with
    the q_st of the new point, as Algorithm 1 with that step would over the same length, and
    the job stops inside the step where those updates reach pi (docs/method.md "Step schedule").
    Jobs whose weights do not adapt (U-RED, P-RED) keep the fixed step delta."""

    delta: float
    largest: float
    crossing_resolution: float | None = None
    weight_update_length: float | None = None
    needs_weight_change: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.crossing_resolution is None:
            object.__setattr__(self, "crossing_resolution", self.delta)

    @property
    def resolution(self) -> float:
        """The crossing resolution (delta unless given)."""
        return self.delta if self.crossing_resolution is None else self.crossing_resolution

    def control_step(self, engine: Engine, i: int, weight_change: float, fraction: float) -> None:
        if weight_change > WEIGHT_CHANGE_SHRINK:
            engine.step_length[i] = max(0.5 * engine.step_length[i], self.delta)
        elif weight_change < WEIGHT_CHANGE_GROW and (fraction > 0 or not engine.misclassified[i]):
            engine.step_length[i] = min(STEP_GROWTH * engine.step_length[i], self.largest)

    def on_first_misclassification(self, engine: Engine, i: int) -> bool:
        """Move v back to the shortest fraction of the last step (to within the crossing
        resolution) where Q_t(v, w(0)) > 0 and restart the step at delta. The next pass
        evaluates q and the gradient there."""
        if not (engine.jobs[i].adapt_weights and engine.last_length[i] > self.resolution):
            return False
        _, high, _ = engine.bisect_last_step(i, engine.last_length[i], _misclassifies(engine, i))
        engine.shorten_last_step(i, high)
        engine.step_length[i] = self.delta
        # the first misclassified point lies within the last bisection bracket (at most the
        # crossing resolution long); next_weights counts half of it, as for any step on which an
        # image changed class
        engine.update_span[i] = min(self.resolution, engine.last_length[i])
        return True

    def next_weights(self, engine: Engine, members: Sequence[int], q: torch.Tensor, fraction: torch.Tensor,
                     w_now: torch.Tensor, excluded: torch.Tensor) -> tuple[torch.Tensor, list[Crossing]]:
        """Eqs. (7)-(8) as many times as Algorithm 1 with steps of ``weight_update_length``
        would over the path just taken (see repeat_weight_updates)."""
        if self.weight_update_length is None:
            return super().next_weights(engine, members, q, fraction, w_now, excluded)
        # where an image changed class during the step, the q_st of its end held for half of it
        # on average (Algorithm 1 updated w with the earlier q_st before that)
        changed = (q != engine.q_before[members]).any(dim=1).tolist()
        counts = [max(1, round((0.5 if moved else 1.0) * engine.update_span[i] / self.weight_update_length))
                  if engine.jobs[i].adapt_weights else 1 for i, moved in zip(members, changed)]
        if max(counts) <= 1:
            return super().next_weights(engine, members, q, fraction, w_now, excluded)
        repeated, crossings = repeat_weight_updates(q.detach().double().cpu().numpy(),
                                                    w_now.detach().double().cpu().numpy(),
                                                    excluded.cpu().numpy(), counts, engine.pi)
        return torch.as_tensor(repeated, dtype=engine.dtype).to(engine.device), crossings

    def stop_within_last_step(self, engine: Engine, i: int, q_end: torch.Tensor, k: int,
                              w_check: np.ndarray) -> bool:
        """Algorithm 1, stepping by weight_update_length, would have stopped k of its steps into
        job i's last step (the repeated updates of w reached pi there): stop job i at that point
        if, there, Q_t >= pi with those weights (and onnxruntime agrees). False, with nothing
        changed, when it does not (an image changed class later in the step)."""
        assert self.weight_update_length is not None, "only repeated updates report crossings"
        start, length = engine.v[i] - engine.last_step[i], engine.last_length[i]
        if length <= 0.0:
            return False
        change = 0.0             # where on the step an image first changed class (bisection)
        if not bool((engine.q_before[i] == q_end).all()):
            low, high, _ = engine.bisect_last_step(i, length, _changes_class(engine, i))
            change = 0.5 * (low + high)
        fraction_of_step = change + k * self.weight_update_length / length
        if fraction_of_step >= 1.0:
            return False
        point = start + fraction_of_step * engine.last_step[i]
        weights = torch.as_tensor(w_check, dtype=engine.dtype).to(engine.device)
        q_there = engine.fractions_at(i, point)
        fraction = float((weights * q_there).sum())
        if fraction < engine.pi or not engine.accepts(i, point, weights):
            return False
        engine.shorten_last_step(i, fraction_of_step)
        engine.w[i] = weights
        engine.finish(i, q_there, fraction, STATUS_CONVERGED)
        return True


def _misclassifies(engine: Engine, i: int) -> Callable[[torch.Tensor], bool]:
    """Whether q_st at a point gives Q_t(v, w) > 0 with job i's current weights."""
    return lambda q: float((engine.w[i] * q).sum()) > 0


def _changes_class(engine: Engine, i: int) -> Callable[[torch.Tensor], bool]:
    """Whether q_st at a point differs from q_st where job i's last step began."""
    return lambda q: not bool((q == engine.q_before[i]).all())
