"""Each DPO-family loss against an independent float64 computation, plus the identities."""

import math

import pytest
import torch

from alignflow.components.objectives.preference import dpo_margin, preference_loss, preference_metrics


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


@pytest.fixture()
def logps():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(64, generator=g, dtype=torch.float64) * 5 for _ in range(4)]


def _hand(loss_type, pc, pr, rc, rr, beta, eps):
    out = []
    for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist()):
        h = (a - c) - (b - d)
        if loss_type == "sigmoid":
            out.append(-_logsig(beta * h))
        elif loss_type == "ipo":
            out.append((h - 1 / (2 * beta)) ** 2)
        elif loss_type == "cdpo":
            out.append((1 - eps) * -_logsig(beta * h) + eps * -_logsig(-beta * h))
        elif loss_type == "rdpo":
            out.append(((1 - eps) * -_logsig(beta * h) - eps * -_logsig(-beta * h)) / (1 - 2 * eps))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "cdpo", "rdpo"])
@pytest.mark.parametrize("beta,eps", [(0.1, 0.1), (0.5, 0.3), (2.0, 0.0)])
def test_loss_matches_float64_hand_computation(logps, loss_type, beta, eps):
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = logps
    got = preference_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, loss_type=loss_type, beta=beta,
                          label_smoothing=eps)
    expected = _hand(loss_type, policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, eps)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_rdpo_and_cdpo_with_zero_epsilon_equal_dpo(logps):
    dpo = preference_loss(*logps, loss_type="sigmoid", beta=0.1)
    torch.testing.assert_close(preference_loss(*logps, loss_type="rdpo", beta=0.1, label_smoothing=0.0), dpo)
    torch.testing.assert_close(preference_loss(*logps, loss_type="cdpo", beta=0.1, label_smoothing=0.0), dpo)


def test_rdpo_is_unbounded_below_and_rejects_half():
    big = torch.tensor([200.0], dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    # a confidently "flipped" pair: with ε > 0 the flipped term dominates and the loss goes negative
    assert preference_loss(big, zero, zero, zero, "rdpo", beta=0.1, label_smoothing=0.2).item() < 0
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        preference_loss(big, zero, zero, zero, "rdpo", beta=0.1, label_smoothing=0.5)


def test_ipo_is_minimised_at_margin_one_over_two_tau():
    beta = 0.25
    h = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    zeros = torch.zeros_like(h)
    losses = preference_loss(h, zeros, zeros, zeros, "ipo", beta=beta)
    assert h[losses.argmin()].item() == pytest.approx(1 / (2 * beta), abs=0.011)


def test_unknown_loss_type_is_a_clear_error(logps):
    with pytest.raises(ValueError, match="unknown loss_type 'dpo2'"):
        preference_loss(*logps, loss_type="dpo2", beta=0.1)


def test_metrics_report_margin_and_accuracy():
    pc, pr = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0])
    rc, rr = torch.zeros(2), torch.zeros(2)
    m = preference_metrics(pc, pr, rc, rr, beta=0.5)
    assert m["rewards/accuracy"] == 0.5
    assert m["rewards/margin"] == pytest.approx(0.0)
    assert dpo_margin(pc, pr, rc, rr).tolist() == [1.0, -1.0]
