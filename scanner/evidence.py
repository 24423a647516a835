"""When the estimates cannot carry a verdict: the rule that turns a scan into "inconclusive" (exit 2).

The test of Sec. 3.2 reads ||v_t|| as the smallest pattern that reaches Q_t >= pi. An estimate
that stopped early (status ``max_iterations``, ``zero_gradient``) or whose final pattern
onnxruntime does not confirm (status ``unverified``, or onnxruntime's Q_t below pi on the
original graph) is not that minimum: its ||v_t|| is only a lower bound, r_t = 1/||v_t|| only an
upper bound. Such a bound is not what the test assumes, and it does not move the test in a
known direction (a smaller r_t in the null sample can widen or narrow the fitted Gamma). So:

* the most suspicious estimate (largest r_t) must be converged and confirmed, whatever the
  outcome: it is the evidence for "backdoor", and its own true r_t is unknown for "clean";
* **clean** needs every estimate converged and confirmed: "no backdoor" must not rest on
  numbers that are not what the test assumes;
* **backdoor** with shortfalls among the other classes stands only if the test, run again on
  the estimates that are converged and confirmed alone (at least 3), still flags the same
  class: a test over fewer classes, on numbers that are what it assumes.

Anything else is inconclusive: the scan ends with exit status 2 and names the classes, never
with a clean verdict.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import InconclusiveError
from .estimation import STATUS_CONVERGED, PatternEstimate


@dataclass(frozen=True)
class Shortfall:
    """One estimate that does not carry its norm: the job's name and why."""

    name: str
    reason: str


def shortfalls(estimates: Sequence[PatternEstimate], verified_fractions: Sequence[float],
               pi: float) -> list[tuple[int, Shortfall]]:
    """(index, why) for every estimate that stopped short of pi or that onnxruntime does not confirm."""
    found = []
    for i, (estimate, verified) in enumerate(zip(estimates, verified_fractions, strict=True)):
        if estimate.status != STATUS_CONVERGED:
            found.append((i, Shortfall(job_name(estimate), f"stopped with status {estimate.status} at "
                                                           f"Q_t {estimate.fraction:.3f}")))
        elif verified < pi:
            found.append((i, Shortfall(job_name(estimate), f"onnxruntime measures Q_t {verified:.3f} < pi "
                                                           f"{pi:g} for the final pattern")))
    return found


def require_evidence(estimates: Sequence[PatternEstimate], verified_fractions: Sequence[float], pi: float,
                     suspect: int, detected: bool, flags_on: Callable[[list[int]], int | None],
                     norm: str = "||v_t||", iterations_option: str = "--max-iterations") -> list[str]:
    """Raise InconclusiveError unless the estimates support the verdict (module docstring); else
    return warnings for the shortfalls that the verdict could do without.

    ``suspect`` is the index of the most suspicious estimate (largest r_t), ``detected`` the
    test's outcome on all estimates; ``flags_on(indices)`` runs the test on those estimates alone
    and returns the index it flags, or None. ``norm`` and ``iterations_option`` name the statistic's
    norm and the option that bounds the estimation in the messages (patch methods: ||m_t||_1 and
    --patch-iterations)."""
    missing = shortfalls(estimates, verified_fractions, pi)
    if not missing:
        return []
    by_index = dict(missing)
    listed = "; ".join(f"{s.name} {s.reason}" for _, s in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    remedy = (f"raise {iterations_option}, or run 'lred inspect' if onnxruntime disagrees with the converted "
              "module")
    if suspect in by_index:
        raise InconclusiveError(
            f"inconclusive: the most suspicious estimate ({by_index[suspect].name}) {by_index[suspect].reason}, "
            f"so its {norm} is not the converged minimum the test of Sec. 3.2 reads; {remedy}")
    if not detected:
        raise InconclusiveError(
            f"inconclusive: {len(missing)} of {len(estimates)} estimations did not reach a confirmed Q_t >= pi "
            f"({listed}{more}); their norms are not what the test reads, so 'no backdoor' cannot be "
            f"concluded; {remedy}")
    kept = [i for i in range(len(estimates)) if i not in by_index]
    if len(kept) < 3 or flags_on(kept) != suspect:
        raise InconclusiveError(
            f"inconclusive: {job_name(estimates[suspect])} is flagged, but not by the test on the "
            f"{len(kept)} estimations that reached a confirmed Q_t >= pi alone ({listed}{more} did not); "
            f"{remedy}")
    return [f"the verdict rests on the {len(kept)} estimations that reached a confirmed Q_t >= pi "
            f"(the test on them alone flags {job_name(estimates[suspect])} "
            f"as well); left out: {listed}{more}"]


def job_name(estimate: PatternEstimate) -> str:
    """'class t' for a target's estimate, 'pair s->t' for a P-RED pair."""
    if len(estimate.sources) == 1:
        return f"pair {estimate.sources[0]}->{estimate.target_class}"
    return f"class {estimate.target_class}"
