"""MCTS over reasoning steps for many problems at once (ALGORITHMS.md §2).

Each search iteration takes one leaf from every unfinished tree (PUCT), expands all of them in
one batched ``generate`` (k children each, shared-prefix KV reuse), self-evaluates every new
child in one batched forward, scores terminal children with the verifier, and backs up. After
``n_iters`` iterations (4× for a tree's first root) each tree advances its root to the most
visited child, keeping the subtree, until the root is terminal.

Choices the spec leaves open, stated here and switchable in ``MCTSConfig``: the first root's
value is 0 (children's rewards are then their own values); a non-terminal node at
``depth_limit`` is closed as terminal and scored by the verifier; the self-evaluation
confidence is the probability of "B" over the whole vocabulary (``self_eval_normalize`` uses
p(B) / (p(A) + p(B)) instead); the self-evaluation question continues the child's own
conversation (``self_eval_layout: continuation``, KV cache reused) rather than restating
question, reference and partial solution in a new prompt (``fresh``, the published layout).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from alignflow.components.collection.mcts.policy import (
    Candidate,
    SelfEvalRequest,
    StepPolicy,
    continuation_suffix,
    self_eval_prompt,
)
from alignflow.components.collection.mcts.tree import (
    Node,
    StepPair,
    backup,
    best_child,
    extract_pairs,
    select_leaf,
    set_evaluation,
)
from alignflow.components.config import MCTSConfig
from alignflow.components.data.answers import is_correct, states_final_answer


@dataclass
class SearchProblem:
    problem_id: str
    question: str
    answer: int | float
    prompt: str  # the rendered chat prompt the policy continues
    reference_solution: str | None = None


@dataclass
class TreeResult:
    problem: SearchProblem
    root: Node  # the first root: the whole tree
    path: list[Node]  # the roots the search advanced through, first root first
    pairs: list[StepPair]
    final_correct: bool
    kept: bool  # False when ``filter`` dropped the tree's pairs
    n_expanded: int = 0


@dataclass
class _Tree:
    problem: SearchProblem
    root: Node
    path: list[Node] = field(default_factory=list)
    iterations_left: int = 0
    n_expanded: int = 0
    done: bool = False
    eval_suffixes: tuple[str, str] = ("", "")  # continuation_suffix for this problem


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def distinct_candidates(candidates: list[Candidate], breadth_limit: int) -> list[Candidate]:
    """Drop near-duplicates (same text up to case and spacing) and empty steps; keep the first
    ``breadth_limit``."""
    seen: set[str] = set()
    kept: list[Candidate] = []
    for c in candidates:
        key = _normalize(c.text)
        if (not key and not c.ended) or key in seen:
            continue
        seen.add(key)
        kept.append(c)
    return kept[:breadth_limit]


def context_of(problem: SearchProblem, node: Node, separator: str = "\n") -> str:
    return problem.prompt + "".join(step + separator for step in node.steps())


def _confidence(probs: list[float], normalize: bool) -> float:
    """C from p("B") (and p("A") when normalizing), as read by ``_self_eval_answers``."""
    return probs[1] / max(probs[0] + probs[1], 1e-12) if normalize else probs[0]


def _self_eval_answers(cfg: MCTSConfig) -> list[str]:
    return ["A", "B"] if cfg.self_eval_normalize else ["B"]


def _expand(trees: list[_Tree], leaves: list[Node], policy: StepPolicy, cfg: MCTSConfig, seed: int) -> int:
    """Expand every leaf in one batch; evaluate and attach the children. Returns children made.

    First roots want ``n_init_actions`` children, later nodes ``n_actions``: leaves are sampled in
    one call per wanted count, so no leaf generates children that are thrown away. With the
    ``continuation`` layout each call also self-evaluates its samples on top of their own KV cache."""
    wanted = [cfg.n_init_actions if leaf.depth == 0 else cfg.n_actions for leaf in leaves]
    answers = _self_eval_answers(cfg)
    continuation = cfg.self_eval_layout == "continuation"
    sampled: list[list[Candidate]] = [[] for _ in leaves]
    for group, k in enumerate(sorted(set(wanted))):
        members = [i for i, w in enumerate(wanted) if w == k]
        contexts = [context_of(trees[i].problem, leaves[i], cfg.step_separator) for i in members]
        request = SelfEvalRequest([trees[i].eval_suffixes for i in members], answers) if continuation else None
        for i, candidates in zip(members, policy.sample_steps(contexts, k, seed + 500_001 * group, request),
                                 strict=True):
            sampled[i] = candidates
    new_children: list[tuple[_Tree, Node, list[str], list[float] | None]] = []
    for tree, leaf, candidates in zip(trees, leaves, sampled, strict=True):
        for c in distinct_candidates(candidates, cfg.breadth_limit):
            child = leaf.add_child(Node(step=c.text, logp=c.logp, n_tokens=c.n_tokens, ended=c.ended))
            steps = child.steps()
            child.terminal = c.ended or states_final_answer(c.text) or child.depth >= cfg.depth_limit
            if child.terminal:
                child.correct = is_correct(cfg.step_separator.join(steps), tree.problem.answer)
            new_children.append((tree, child, steps, c.answer_probs))
        tree.n_expanded += 1
    if not new_children:
        return 0
    if not continuation:  # the published layout: a fresh prompt per child, re-encoded from scratch
        prompts = [self_eval_prompt(policy.tokenizer, t.problem.question, t.problem.reference_solution, steps,
                                    cfg.step_separator)
                   for t, _, steps, _ in new_children]
        fresh = policy.probabilities_of(prompts, answers)
        new_children = [(t, child, steps, p) for (t, child, steps, _), p in zip(new_children, fresh, strict=True)]
    for _, child, _, probs in new_children:
        assert probs is not None  # read in the sampling pass (continuation) or just above (fresh)
        parent_depth = child.depth - 1
        value = _confidence(probs, cfg.self_eval_normalize) / max(parent_depth - cfg.self_eval_depth_offset, 1)
        if child.terminal:
            value += 1.0 if child.correct else -1.0
        set_evaluation(child, value)
    return len(new_children)


def search(policy: StepPolicy, problems: list[SearchProblem], cfg: MCTSConfig, seed: int,
           on_iteration: Callable[[int], None] | None = None) -> list[TreeResult]:
    """Search one tree per problem, all trees advancing together; deterministic under ``seed``."""
    trees = [_Tree(p, Node(step=""), iterations_left=cfg.first_root_iterations_factor * cfg.n_iters)
             for p in problems]
    if cfg.self_eval_layout == "continuation":
        for t in trees:
            t.eval_suffixes = continuation_suffix(policy.tokenizer, t.problem.reference_solution)
    for t in trees:
        t.path.append(t.root)
    call = 0
    while any(not t.done for t in trees):
        active = [t for t in trees if not t.done and t.iterations_left > 0]
        if active:
            leaves = [select_leaf(t.path[-1], cfg.c_puct, cfg.length_penalty) for t in active]
            expandable = [(t, leaf) for t, leaf in zip(active, leaves, strict=True)
                          if not leaf.terminal and not leaf.children]
            if expandable:
                _expand([t for t, _ in expandable], [leaf for _, leaf in expandable], policy, cfg,
                        seed * 1_000_003 + call)
                call += 1
            for t, leaf in zip(active, leaves, strict=True):
                backup(leaf, stop=t.path[-1])
                t.iterations_left -= 1
            if on_iteration:
                on_iteration(len(active))
            continue
        for t in trees:  # every tree has used its iterations at this root: advance
            if t.done:
                continue
            root = t.path[-1]
            if root.terminal or not root.children:
                t.done = True
                continue
            t.path.append(best_child(root))
            t.iterations_left = cfg.n_iters
            if t.path[-1].terminal:
                t.done = True
    rng = random.Random(seed)
    results: list[TreeResult] = []
    for t in trees:
        final = t.path[-1]
        final_correct = bool(final.terminal and final.correct)
        pairs = extract_pairs(t.path, cfg.rejected_strategy, cfg.max_pairs_per_tree, rng)
        kept = final_correct or not cfg.filter
        results.append(TreeResult(t.problem, t.root, t.path, pairs if kept else [], final_correct, kept, t.n_expanded))
    return results
