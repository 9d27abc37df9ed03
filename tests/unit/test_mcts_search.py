"""MCTS search on the tiny model: the KV-reuse expansion scores steps exactly as a full
re-encode does, the search is deterministic under a seed, and the tree's counts add up."""

import pytest
import torch

from alignflow.components.collection.mcts.policy import (
    Candidate,
    SelfEvalRequest,
    StepPolicy,
    continuation_suffix,
    cut_step,
)
from alignflow.components.collection.mcts.search import SearchProblem, distinct_candidates, search
from alignflow.components.collection.mcts.tree import number_nodes, to_dict
from alignflow.components.config import MCTSConfig
from alignflow.components.data.answers import states_final_answer
from alignflow.components.data.prompts import render_prompt
from alignflow.components.modeling.logprobs import position_ids_for


def _contexts(tokenizer):
    return [render_prompt(tokenizer, "Ava has 3 apples. She picks 4 more. How many now?", ""),
            render_prompt(tokenizer, "Ben has 10 coins and spends 2. How many are left?", "") + "Ben starts with 10.\n"]


def _full_reencode_logp(model, tokenizer, context: str, token_ids: list[int]) -> float:
    ids = tokenizer(context, add_special_tokens=False)["input_ids"] + token_ids
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=x, position_ids=position_ids_for(torch.ones_like(x))).logits[0].float()
    logps = torch.log_softmax(logits[:-1], dim=-1).gather(-1, x[0, 1:].unsqueeze(-1)).squeeze(-1)
    return float(logps[-len(token_ids):].sum())


def test_prefix_cache_reuse_scores_steps_like_a_full_re_encode(tiny_loaded):
    model, tok = tiny_loaded.model.eval(), tiny_loaded.tokenizer
    contexts = _contexts(tok)  # different lengths: left padding is in play
    cached = StepPolicy(model, tok, max_new_tokens=12, reuse_prefix_cache=True)
    sampled = cached.sample_steps(contexts, k=3, seed=0)
    assert [len(c) for c in sampled] == [3, 3]
    for context, candidates in zip(contexts, sampled, strict=True):
        for c in candidates:
            assert len(c.token_ids) == c.n_tokens >= 1
            assert c.logp == pytest.approx(_full_reencode_logp(model, tok, context, c.token_ids), abs=2e-3)
    # the naive path (every child re-encodes its prefix) samples the same steps under the same seed
    naive = StepPolicy(model, tok, max_new_tokens=12, reuse_prefix_cache=False)
    again = naive.sample_steps(contexts, k=3, seed=0)
    assert [[c.token_ids for c in row] for row in again] == [[c.token_ids for c in row] for row in sampled]
    assert naive.expanded_tokens == 3 * cached.expanded_tokens  # each prefix encoded once, not k times


def test_continuation_suffix_closes_the_turn_and_asks(tokenizer):
    after_step, after_eos = continuation_suffix(tokenizer, "2 + 2 = 4.")
    assert after_step == tokenizer.eos_token + after_eos
    assert after_eos.startswith("\n<|im_start|>user\nReference solution:\n2 + 2 = 4.\n\n")
    assert after_eos.endswith("(A) incorrect (B) correct<|im_end|>\n<|im_start|>assistant\nThe answer is (")
    assert "system" not in after_eos  # no second default system turn


def test_self_evaluation_on_the_generation_cache_equals_a_full_re_encode(tiny_loaded):
    """The cached continuation must see exactly prompt + step + question: wrong positions, an
    unmasked left pad or an unmasked token generated after the step would change p(A), p(B)."""
    model, tok = tiny_loaded.model.eval(), tiny_loaded.tokenizer
    with torch.no_grad():  # make the random model end some steps early (a newline), not all
        model.get_output_embeddings().weight[tok("\n", add_special_tokens=False)["input_ids"][0]] *= 8
    contexts = _contexts(tok)
    request = SelfEvalRequest([continuation_suffix(tok, None), continuation_suffix(tok, "10 - 2 = 8.")], ["A", "B"])
    cached = StepPolicy(model, tok, max_new_tokens=12, reuse_prefix_cache=True)
    fast = cached.sample_steps(contexts, k=3, seed=0, self_eval=request)
    slow = StepPolicy(model, tok, max_new_tokens=12, reuse_prefix_cache=False).sample_steps(contexts, 3, 0, request)
    flat_fast, flat_slow = [c for row in fast for c in row], [c for row in slow for c in row]
    assert [c.token_ids for c in flat_fast] == [c.token_ids for c in flat_slow]
    # steps that ended early (positions generated after them must be masked) and steps that used
    # every generated token (the last one never went through the cache)
    assert {len(c.token_ids) for c in flat_fast} == {1, 12}
    for a, b in zip(flat_fast, flat_slow, strict=True):
        assert a.answer_probs is not None and len(a.answer_probs) == 2
        assert torch.log(torch.tensor(a.answer_probs)).tolist() == pytest.approx(
            torch.log(torch.tensor(b.answer_probs)).tolist(), abs=2e-5)  # an off-by-one position moves it 3e-4


def test_step_cutting_and_candidate_filtering(tokenizer):
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    ids = tokenizer("3 + 4 = 7\nThe answer", add_special_tokens=False)["input_ids"]
    c = cut_step(ids, [-0.5] * len(ids), tokenizer.eos_token_id, decode)
    assert c.text == "3 + 4 = 7" and not c.ended and c.token_ids == ids[: c.n_tokens]
    assert c.logp == pytest.approx(-0.5 * c.n_tokens)
    ended = cut_step(ids[:3] + [tokenizer.eos_token_id, 5], [-1.0] * 5, tokenizer.eos_token_id, decode)
    assert ended.ended and ended.n_tokens == 4 and ended.logp == pytest.approx(-4.0)
    cands = [Candidate("A  step", -1, 2, False, [1]), Candidate("a step", -1, 2, False, [2]),
             Candidate("", -1, 1, False, [3]), Candidate("Other", -1, 1, False, [4]),
             Candidate("Third", -1, 1, False, [5])]
    assert [c.text for c in distinct_candidates(cands, breadth_limit=2)] == ["A  step", "Other"]
    assert states_final_answer("So the answer is 7.") and not states_final_answer("3 + 4 = 7")


def test_step_separator_is_configurable(tokenizer):
    """A blank line as the separator: single newlines stay inside a step, the separator may span
    tokens, and pair rows join and end steps with it."""
    from alignflow.components.collection.mcts.pairs import step_pair_rows
    from alignflow.components.collection.mcts.search import TreeResult
    from alignflow.components.collection.mcts.tree import Node, StepPair

    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    ids = tokenizer("3 + 4 = 7\nso far\n\nThe answer", add_special_tokens=False)["input_ids"]
    c = cut_step(ids, [-0.1] * len(ids), tokenizer.eos_token_id, decode, separator="\n\n")
    assert c.text == "3 + 4 = 7\nso far" and decode(c.token_ids).endswith("\n\n")
    assert cut_step(ids, [-0.1] * len(ids), tokenizer.eos_token_id, decode).text == "3 + 4 = 7"

    problem = SearchProblem("p", "q?", 7, "PROMPT:")
    pairs = [StepPair(["a", "b"], "good", "bad", 1.0, -1.0, 3, 1, 2),
             StepPair([], "fine", "tie", 0.5, 0.1, 1, 1, 0, chosen_ended=True),  # ε = 0.5: no preference
             StepPair([], "seen", "unseen", 0.5, 0.1, 0, 0, 1)]  # no visits: no evidence, ε = 0.5, dropped
    result = TreeResult(problem, Node(step=""), [], pairs, final_correct=True, kept=True)
    rows = step_pair_rows([result], "<E>", conservative=True, lineage={"seed": 1}, separator="\n\n")
    assert len(rows) == 1
    assert rows[0].prompt == "PROMPT:a\n\nb\n\n" and rows[0].chosen == "good\n\n" and rows[0].rejected == "bad\n\n"
    assert rows[0].label_smoothing == pytest.approx(0.25) and rows[0].lineage["depth"] == 2


def _problems(tokenizer):
    return [SearchProblem("p1", "Ava has 3 apples. She picks 4 more. How many now?", 7,
                          render_prompt(tokenizer, "Ava has 3 apples. She picks 4 more. How many now?", ""),
                          "3 + 4 = 7\nThe answer is 7."),
            SearchProblem("p2", "Ben has 10 coins and spends 2. How many are left?", 8,
                          render_prompt(tokenizer, "Ben has 10 coins and spends 2. How many are left?", ""))]


def test_search_is_deterministic_under_a_seed_and_counts_add_up(tiny_loaded):
    model, tok = tiny_loaded.model.eval(), tiny_loaded.tokenizer
    cfg = MCTSConfig(n_iters=2, first_root_iterations_factor=2, depth_limit=2, max_new_tokens_per_step=6,
                     filter=False)

    def run(seed):
        policy = StepPolicy(model, tok, cfg.max_new_tokens_per_step, cfg.temperature)
        results = search(policy, _problems(tok), cfg, seed=seed)
        for r in results:
            number_nodes(r.root)
        return results

    first, second = run(0), run(0)
    assert [to_dict(r.root) for r in first] == [to_dict(r.root) for r in second]
    assert [to_dict(r.root) for r in run(1)] != [to_dict(r.root) for r in first]
    for r in first:
        assert r.root.N == cfg.first_root_iterations_factor * cfg.n_iters  # one backup per iteration at it
        assert 1 <= len(r.root.children) <= cfg.n_init_actions
        assert r.path[0] is r.root and r.path[-1].terminal  # the search ran to a terminal root
        assert all(node.depth <= cfg.depth_limit for node in r.path)
        assert r.path[-1].correct is not None
        for pair in r.pairs:
            assert pair.q_chosen > pair.q_rejected and 0 <= pair.epsilon <= 0.5


def test_static_sampler_expansion_scores_and_self_evaluates_like_full_re_encodes(tiny_loaded):
    """The static-cache sampler (sampling.backend=static; the default on CUDA) as MCTS's expansion: its
    steps stop at the separator, their log-probs are the model's, and the self-evaluation continuing
    its cache reads what re-encoding prompt + step + question reads."""
    from alignflow.components.modeling.sampler import release_engines

    release_engines()
    model, tok = tiny_loaded.model.eval(), tiny_loaded.tokenizer
    newline = tok("\n", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():  # make the random model end some steps early (a newline), not all
        model.get_output_embeddings().weight[newline] *= 8
    contexts = _contexts(tok)
    request = SelfEvalRequest([continuation_suffix(tok, None), continuation_suffix(tok, "10 - 2 = 8.")], ["A", "B"])
    cached = StepPolicy(model, tok, max_new_tokens=12, reuse_prefix_cache=True, backend="static")
    fast = cached.sample_steps(contexts, k=3, seed=0, self_eval=request)
    slow = StepPolicy(model, tok, max_new_tokens=12, reuse_prefix_cache=False, backend="static").sample_steps(
        contexts, 3, 0, request)
    flat_fast, flat_slow = [c for row in fast for c in row], [c for row in slow for c in row]
    assert [c.token_ids for c in flat_fast] == [c.token_ids for c in flat_slow]  # same seed, same samples
    assert {1, 12} <= {len(c.token_ids) for c in flat_fast}  # some stopped at a newline, some ran to the limit
    for context, c in zip([x for x in contexts for _ in range(3)], flat_fast, strict=True):
        last = c.token_ids[-1]
        assert "\n" in tok.decode([last]) or last == tok.eos_token_id or len(c.token_ids) == 12
        assert c.logp == pytest.approx(_full_reencode_logp(model, tok, context, c.token_ids), abs=2e-3)
    for a, b in zip(flat_fast, flat_slow, strict=True):
        assert a.answer_probs is not None and b.answer_probs is not None
        assert torch.log(torch.tensor(a.answer_probs)).tolist() == pytest.approx(
            torch.log(torch.tensor(b.answer_probs)).tolist(), abs=2e-5)
    again = StepPolicy(model, tok, max_new_tokens=12, backend="static").sample_steps(contexts, k=3, seed=0)
    assert [c.token_ids for row in again for c in row] == [c.token_ids for c in flat_fast]  # retirement on: same
    release_engines()
