"""Source-weight update of Algorithm 1: eqs. (7)-(8) and the Lagrangian of App. A.1."""
import numpy as np
import torch

from scanner.weights import uniform_weights, update_weights


def closed_form(q, fraction, t):
    temperature = -np.log(fraction)
    e = np.exp(q / temperature)
    e[t] = 0.0
    return e / e.sum()


def lagrangian_objective(w, q, temperature, t):
    """sum_s w_s q_st - T sum_s w_s log w_s over s != t (eq. (9) without the multiplier term)."""
    keep = np.arange(len(q)) != t
    ws = w[keep]
    return float((ws * q[keep]).sum() - temperature * (ws * np.log(ws)).sum())


def test_update_matches_closed_form_of_eq8():
    q = np.array([0.5, 0.25, 0.0, 1.0, 0.125])
    fraction = 0.4
    got = update_weights(torch.tensor(q)[None], torch.tensor([fraction], dtype=torch.float64),
                         torch.tensor([[False, False, True, False, False]]))[0].numpy()
    np.testing.assert_allclose(got, closed_form(q, fraction, 2), rtol=1e-12)
    assert got[2] == 0.0
    assert abs(got.sum() - 1.0) < 1e-12


def test_update_maximizes_the_entropy_regularized_lagrangian():
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 1, size=7)
    t, fraction = 3, 0.3
    temperature = -np.log(fraction)
    best = update_weights(torch.tensor(q)[None], torch.tensor([fraction], dtype=torch.float64),
                          torch.nn.functional.one_hot(torch.tensor([t]), 7).bool())[0].numpy()
    best_value = lagrangian_objective(best, q, temperature, t)
    for _ in range(2000):
        w = rng.dirichlet(np.ones(6))
        w = np.insert(w, t, 0.0)
        assert lagrangian_objective(w, q, temperature, t) <= best_value + 1e-12


def test_zero_fraction_resets_to_uniform_with_target_excluded():
    q = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    got = update_weights(q, torch.tensor([0.0]), torch.tensor([[False, True, False, False]]))[0]
    np.testing.assert_allclose(got.numpy(), uniform_weights(4, 1))
    np.testing.assert_allclose(uniform_weights(4, 1), [1 / 3, 0.0, 1 / 3, 1 / 3])


def test_low_temperature_concentrates_on_the_class_with_largest_fraction():
    q = torch.tensor([[0.0, 1.0, 0.2, 0.1]])
    got = update_weights(q, torch.tensor([0.89]), torch.tensor([[True, False, False, False]]))[0]
    assert int(got.argmax()) == 1 and float(got[1]) > 0.99
