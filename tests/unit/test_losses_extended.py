"""f-DPO margins, rationale term, step-level ε and reward-model losses vs float64 hand computations."""

import math

import pytest
import torch

from alignflow.components.objectives.preference import (
    bradley_terry_loss,
    conservative_epsilon,
    eurus_loss,
    f_divergence_margin,
    preference_loss,
    rationale_loss,
)


def _sp(x):  # softplus
    return math.log1p(math.exp(x))


def _ls(x):  # log sigmoid
    return -_sp(-x)


@pytest.fixture()
def rho():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, generator=g, dtype=torch.float64), torch.randn(32, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("divergence,alpha", [("reverse_kl", 0.5), ("forward_kl", 0.5), ("js", 0.5),
                                              ("alpha", 0.3), ("alpha", 0.9)])
def test_f_divergence_margins_match_the_table(rho, divergence, alpha):
    w, l = rho
    got = f_divergence_margin(w, l, divergence, alpha)
    expected = []
    for a, b in zip(w.tolist(), l.tolist()):
        if divergence == "reverse_kl":
            expected.append(a - b)
        elif divergence == "forward_kl":
            expected.append(math.exp(-b) - math.exp(-a))
        elif divergence == "js":
            expected.append((a - b) - (_sp(a) - _sp(b)))
        else:
            expected.append((math.exp(-alpha * b) - math.exp(-alpha * a)) / alpha)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_f_dpo_reverse_kl_is_dpo_and_composes_with_rdpo(rho):
    w, l = rho
    zeros = torch.zeros_like(w)
    for loss_type in ("sigmoid", "ipo", "cdpo", "rdpo"):
        torch.testing.assert_close(
            preference_loss(w, l, zeros, zeros, loss_type, 0.1, 0.2 if loss_type in ("cdpo", "rdpo") else 0.0,
                            divergence="reverse_kl"),
            preference_loss(w, l, zeros, zeros, loss_type, 0.1, 0.2 if loss_type in ("cdpo", "rdpo") else 0.0))
    js = preference_loss(w, l, zeros, zeros, "rdpo", 0.1, 0.1, divergence="js")
    h = f_divergence_margin(w, l, "js")
    manual = ((0.9 * -torch.nn.functional.logsigmoid(0.1 * h)) - 0.1 * -torch.nn.functional.logsigmoid(-0.1 * h)) / 0.8
    torch.testing.assert_close(js, manual)


def test_exponents_are_capped():
    huge = torch.tensor([-1e4], dtype=torch.float64)
    assert torch.isfinite(f_divergence_margin(huge, huge * 0, "forward_kl")).all()
    with pytest.raises(ValueError, match="α in \\(0, 1\\)"):
        f_divergence_margin(huge, huge, "alpha", alpha=1.0)


def test_rationale_loss_both_forms(rho):
    h, r = rho
    beta, gamma = 0.1, 0.1
    lin = [-_ls(beta * a) - gamma * b for a, b in zip(h.tolist(), r.tolist())]
    logsig = [-_ls(beta * a) - _ls(gamma * b) for a, b in zip(h.tolist(), r.tolist())]
    torch.testing.assert_close(rationale_loss(h, r, beta, gamma, "linear"), torch.tensor(lin, dtype=torch.float64))
    torch.testing.assert_close(rationale_loss(h, r, beta, gamma, "logsigmoid"),
                               torch.tensor(logsig, dtype=torch.float64))


def test_conservative_epsilon_from_visits():
    """One rule for a batch and for a tree's pair (issue 14: the tree said 0.5 at zero visits, the loss
    module 0.0). Chosen: 0.5 — no visits is no evidence, which states no preference; such a pair is
    dropped before training, so the loss never sees ε outside [0, 0.5)."""
    from alignflow.components.collection.mcts.tree import StepPair

    eps = conservative_epsilon(torch.tensor([3.0, 1.0, 0.0]), torch.tensor([1.0, 3.0, 0.0]))
    assert eps.tolist() == [0.25, 0.5, 0.5]
    for n_w, n_l in [(0, 0), (3, 1), (1, 3), (2, 2), (5, 0), (0, 4)]:
        pair = StepPair([], "w", "l", 1.0, 0.0, n_w, n_l, 0)
        assert pair.epsilon == conservative_epsilon(n_w, n_l) == float(conservative_epsilon(torch.tensor(n_w),
                                                                                             torch.tensor(n_l)))


def test_reward_model_losses(rho):
    c, r = rho
    bt = [-_ls(a - b) for a, b in zip(c.tolist(), r.tolist())]
    torch.testing.assert_close(bradley_terry_loss(c, r), torch.tensor(bt, dtype=torch.float64))
    torch.testing.assert_close(bradley_terry_loss(c, r, scale=1.0), bradley_terry_loss(c, r))  # scaled m=1 == BT
    torch.testing.assert_close(bradley_terry_loss(c, r, scale=3.0), 3 * bradley_terry_loss(c, r))
    margin_bt = [-_ls(a - b - 2.0) for a, b in zip(c.tolist(), r.tolist())]
    torch.testing.assert_close(bradley_terry_loss(c, r, margin=2.0), torch.tensor(margin_bt, dtype=torch.float64))
    eu = [-_ls(a - b) - _ls(a) - _ls(-b) for a, b in zip(c.tolist(), r.tolist())]
    torch.testing.assert_close(eurus_loss(c, r), torch.tensor(eu, dtype=torch.float64))
