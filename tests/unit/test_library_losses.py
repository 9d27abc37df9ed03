"""TPO list loss, GPM score, ensemble strength and RM calibration vs independent float64 computations."""

import math

import pytest
import torch

from alignflow.components.collection.strength import annotate_pair_file, apply_strength, strength_statistics
from alignflow.components.data.schemas import PairRow
from alignflow.components.evaluation.reward import expected_calibration_error, reward_model_metrics
from alignflow.components.modeling.reward_model import gpm_loss, gpm_score
from alignflow.components.objectives.preference import bradley_terry_loss, cdpo_loss, rationale_loss, rationale_term
from alignflow.components.objectives.ranking import asr_weights, lambda_weights, response_reward, step_means, tpo_loss


def _ls(x: float) -> float:  # log sigmoid
    return -math.log1p(math.exp(-x))


def test_tpo_loss_matches_hand_computation_with_and_without_lambda():
    g = torch.Generator().manual_seed(3)
    rewards = torch.randn(5, generator=g, dtype=torch.float64)
    scores = torch.tensor([3.0, 1.0, 4.0, 1.0, 0.0], dtype=torch.float64)
    beta = 0.7
    order = sorted(range(5), key=lambda i: (-scores[i].item(), i))
    rank = {i: pos + 1 for pos, i in enumerate(order)}
    weighted, plain = 0.0, 0.0
    for i in range(5):
        for j in range(5):
            if scores[i] > scores[j]:
                term = -_ls(beta * (rewards[i].item() - rewards[j].item()))
                lam = abs((2 ** scores[i].item() - 1) - (2 ** scores[j].item() - 1)) * abs(
                    1 / math.log(1 + rank[i]) - 1 / math.log(1 + rank[j]))
                weighted += lam * term
                plain += term
    assert tpo_loss(rewards, scores, beta, lambda_weighting=True).item() == pytest.approx(weighted, rel=1e-12)
    assert tpo_loss(rewards, scores, beta, lambda_weighting=False).item() == pytest.approx(plain, rel=1e-12)


def test_tpo_two_responses_unweighted_is_a_dpo_pair_and_ties_give_no_signal():
    rewards = torch.tensor([0.3, -0.2], dtype=torch.float64)
    assert tpo_loss(rewards, torch.tensor([1.0, 0.0], dtype=torch.float64), 0.1, lambda_weighting=False).item() == \
        pytest.approx(-_ls(0.1 * 0.5), rel=1e-12)
    tied = rewards.clone().requires_grad_()
    loss = tpo_loss(tied, torch.tensor([2.0, 2.0], dtype=torch.float64), 0.1)
    assert loss.item() == 0.0
    loss.backward()  # still differentiable
    assert lambda_weights(torch.tensor([1.0, 1.0])).abs().sum() == 0


def test_step_means_and_adaptive_step_reward():
    ratios = torch.tensor([1.0, 3.0, -2.0, 0.0, 5.0], dtype=torch.float64)
    steps = torch.tensor([-1, 0, 0, 1, 1])
    torch.testing.assert_close(step_means(ratios, steps, 2), torch.tensor([0.5, 2.5], dtype=torch.float64))
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    top = torch.tensor([[1.0, 0.0]], dtype=torch.float64)  # one step: step 2 compares with it too
    weights = asr_weights(hidden, top)
    torch.testing.assert_close(weights, torch.tensor([2.0, 1.0], dtype=torch.float64))
    reward = response_reward(torch.tensor([0.5, 2.5], dtype=torch.float64), weights)
    assert reward.item() == pytest.approx((1 + 2.5) / 3)
    assert response_reward(torch.tensor([0.5, 2.5], dtype=torch.float64)).item() == pytest.approx(1.5)


def test_gpm_score_is_skew_symmetric_and_matches_the_sum():
    g = torch.Generator().manual_seed(5)
    vi, vj = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    gate = torch.softmax(torch.randn(6, 2, generator=g, dtype=torch.float64), -1)
    s = gpm_score(vi, vj, gate)
    torch.testing.assert_close(gpm_score(vj, vi, gate), -s)
    torch.testing.assert_close(gpm_score(vi, vi, gate), torch.zeros(6, dtype=torch.float64))
    expected = [sum(gate[b, l].item() * (vi[b, 2 * l].item() * vj[b, 2 * l + 1].item()
                                         - vi[b, 2 * l + 1].item() * vj[b, 2 * l].item()) for l in range(2))
                for b in range(6)]
    torch.testing.assert_close(s, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert gpm_loss(torch.tensor([0.02]), 0.1).item() == pytest.approx(-_ls(0.2), rel=1e-6)


def test_scaled_bt_with_m1_is_bt_and_margin_shifts():
    g = torch.Generator().manual_seed(2)
    rc, rr = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(bradley_terry_loss(rc, rr, scale=1.0), bradley_terry_loss(rc, rr))
    torch.testing.assert_close(bradley_terry_loss(rc, rr, scale=3.0), 3 * bradley_terry_loss(rc, rr))
    torch.testing.assert_close(bradley_terry_loss(rc, rr, margin=0.5), bradley_terry_loss(rc - 0.5, rr))


def test_rationale_term_forms_and_per_pair_epsilon():
    h, lp = torch.tensor([0.4, -1.0], dtype=torch.float64), torch.tensor([-3.0, -7.5], dtype=torch.float64)
    torch.testing.assert_close(rationale_loss(h, lp, 0.1, 0.1, "linear"),
                               -torch.nn.functional.logsigmoid(0.1 * h) + 0.1 * 3.0 * torch.tensor([1.0, 2.5],
                                                                                                   dtype=torch.float64))
    torch.testing.assert_close(rationale_term(lp, 0.1, "logsigmoid"),
                               torch.tensor([-_ls(-0.3), -_ls(-0.75)], dtype=torch.float64))
    eps = torch.tensor([0.0, 0.2], dtype=torch.float64)
    per_pair = cdpo_loss(h, 0.5, eps)
    torch.testing.assert_close(per_pair[0], cdpo_loss(h, 0.5, 0.0)[0])
    torch.testing.assert_close(per_pair[1], cdpo_loss(h, 0.5, 0.2)[1])
    with pytest.raises(ValueError, match="0.5"):
        cdpo_loss(h, 0.5, torch.tensor([0.1, 0.5]))


def test_ensemble_strength_statistics_and_modes(tmp_path):
    diffs = torch.tensor([[1.0, -2.0, 0.1], [3.0, -1.0, -0.1], [2.0, -3.0, 0.0]], dtype=torch.float64)
    mean, std = strength_statistics(diffs)
    torch.testing.assert_close(mean, torch.tensor([2.0, -2.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(std,
                               torch.tensor([math.sqrt(2 / 3), math.sqrt(2 / 3), math.sqrt(0.02 / 3)],
                                            dtype=torch.float64))
    pairs = [PairRow(problem_id=str(i), prompt="p", chosen=f"c{i}", rejected=f"r{i}", score_chosen=1.0,
                     score_rejected=0.0)
             for i in range(3)]
    flipped = apply_strength(pairs, mean, std, "flip")
    assert [p.chosen for p in flipped] == ["c0", "r1", "c2"] and flipped[1].flipped and flipped[1].strength_mean == 2.0
    assert pairs[1].chosen == "c1"  # inputs untouched
    smoothed = apply_strength(pairs, mean, std, "smooth", threshold=0.5, smooth_epsilon=0.2)
    assert [p.label_smoothing for p in smoothed] == [None, 0.2, 0.2]
    assert [p.margin for p in apply_strength(pairs, mean, std, "adaptive_margin")] == [2.0, -2.0, 0.0]
    with pytest.raises(ValueError, match="M >= 2"):
        strength_statistics(diffs[:1])

    from alignflow.components.data.io import read_rows, write_rows

    path = tmp_path / "pairs.jsonl"
    write_rows(path, pairs)
    annotate_pair_file(path, diffs, "flip", lineage={"ensemble": ["rm-0", "rm-1", "rm-2"]})
    back = read_rows(path, PairRow)
    assert back[1].chosen == "r1" and back[0].strength_std == pytest.approx(math.sqrt(2 / 3))
    assert back[2].lineage["strength"]["ensemble"] == ["rm-0", "rm-1", "rm-2"]


def test_expected_calibration_error_by_hand():
    logits = torch.tensor([math.log(0.9 / 0.1), math.log(0.9 / 0.1), -math.log(0.6 / 0.4), math.log(0.6 / 0.4)],
                          dtype=torch.float64)
    # bin 0.9 (two pairs, both predicted chosen → correct): |1 − 0.9|; bin 0.6: one wrong, one right: |0.5 − 0.6|
    expected = 0.5 * 0.1 + 0.5 * 0.1
    assert expected_calibration_error(logits) == pytest.approx(expected, abs=1e-9)
    metrics = reward_model_metrics(logits, ["math", "math", "chat", "chat"])
    assert metrics["rm/accuracy"] == 0.75
    assert metrics["rm/accuracy/math"] == 1.0 and metrics["rm/accuracy/chat"] == 0.5
