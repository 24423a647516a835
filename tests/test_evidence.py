"""Which estimates may carry a verdict (scanner/evidence.py): never a clean verdict from lower bounds."""
from __future__ import annotations

import numpy as np
import pytest

from scanner.errors import InconclusiveError
from scanner.estimation import STATUS_CONVERGED, STATUS_MAX_ITERATIONS, STATUS_UNVERIFIED, PatternEstimate
from scanner.evidence import require_evidence, shortfalls

K = 5
PI = 0.9


def estimate(target: int, status: str = STATUS_CONVERGED, fraction: float = 0.95) -> PatternEstimate:
    return PatternEstimate(target_class=target, pattern=np.full((2, 2, 1), 0.1, np.float32), iterations=10,
                           misclassification=np.zeros(K), source_weights=np.full(K, 1 / (K - 1)),
                           fraction=fraction, status=status,
                           sources=tuple(s for s in range(K) if s != target))


def never_called(indices: list[int]) -> int | None:
    raise AssertionError("the test needs no re-run here")


def test_all_converged_and_confirmed_supports_either_verdict():
    estimates = [estimate(t) for t in range(K)]
    assert require_evidence(estimates, [0.95] * K, PI, suspect=2, detected=False, flags_on=never_called) == []
    assert require_evidence(estimates, [0.95] * K, PI, suspect=2, detected=True, flags_on=never_called) == []


def test_shortfalls_name_unconverged_and_unconfirmed_estimates():
    estimates = [estimate(0, STATUS_MAX_ITERATIONS, 0.0), estimate(1, STATUS_UNVERIFIED), estimate(2)]
    found = shortfalls(estimates, [0.0, 0.95, 0.5], PI)
    assert [i for i, _ in found] == [0, 1, 2]
    assert "max_iterations" in found[0][1].reason and "unverified" in found[1][1].reason
    assert "onnxruntime measures Q_t 0.500" in found[2][1].reason


def test_clean_verdict_with_an_unconverged_class_is_inconclusive():
    estimates = [estimate(t) for t in range(K)]
    estimates[3] = estimate(3, STATUS_MAX_ITERATIONS, 0.0)
    with pytest.raises(InconclusiveError, match="1 of 5 estimations .*class 3 stopped with status max_iterations"):
        require_evidence(estimates, [0.95] * K, PI, suspect=1, detected=False, flags_on=never_called)


def test_clean_verdict_that_onnxruntime_does_not_confirm_is_inconclusive():
    estimates = [estimate(t) for t in range(K)]
    with pytest.raises(InconclusiveError, match="class 4 onnxruntime measures Q_t 0.100"):
        require_evidence(estimates, [0.95] * 4 + [0.1], PI, suspect=1, detected=False, flags_on=never_called)


@pytest.mark.parametrize("detected", [True, False])
def test_unconverged_most_suspicious_class_is_inconclusive_whatever_the_outcome(detected):
    estimates = [estimate(t) for t in range(K)]
    estimates[1] = estimate(1, STATUS_MAX_ITERATIONS, 0.0)
    with pytest.raises(InconclusiveError, match=r"most suspicious estimate \(class 1\)"):
        require_evidence(estimates, [0.95] * K, PI, suspect=1, detected=detected, flags_on=never_called)


def test_backdoor_stands_when_the_test_on_the_confirmed_estimates_flags_the_same_class():
    estimates = [estimate(t) for t in range(K)]
    estimates[4] = estimate(4, STATUS_MAX_ITERATIONS, 0.2)
    asked = []

    def flags_on(indices: list[int]) -> int | None:
        asked.append(indices)
        return 1

    notes = require_evidence(estimates, [0.95] * K, PI, suspect=1, detected=True, flags_on=flags_on)
    assert asked == [[0, 1, 2, 3]]
    assert len(notes) == 1 and "rests on the 4 estimations" in notes[0] and "class 4" in notes[0]


@pytest.mark.parametrize("flagged", [None, 2])
def test_backdoor_that_the_confirmed_estimates_alone_do_not_flag_is_inconclusive(flagged):
    estimates = [estimate(t) for t in range(K)]
    estimates[4] = estimate(4, STATUS_UNVERIFIED)
    with pytest.raises(InconclusiveError, match="class 1 is flagged, but not by the test on the 4"):
        require_evidence(estimates, [0.95] * K, PI, suspect=1, detected=True, flags_on=lambda kept: flagged)


def test_backdoor_with_fewer_than_three_confirmed_estimates_is_inconclusive():
    estimates = [estimate(t, STATUS_MAX_ITERATIONS, 0.0) for t in range(K)]
    estimates[1] = estimate(1)
    estimates[2] = estimate(2)
    with pytest.raises(InconclusiveError, match="not by the test on the 2"):
        require_evidence(estimates, [0.95] * K, PI, suspect=1, detected=True, flags_on=lambda kept: 1)
