"""The search tree of MCTS step-level preference collection (ALGORITHMS.md §2), without a model.

A node is a state (prompt + the steps so far); the edge into it is one reasoning step. This
module holds what is pure arithmetic on the tree — the length-penalised prior, PUCT selection,
the backup, advancing the root, pair extraction — so each is tested on hand-built trees with
known numbers. ``collection/mcts/search.py`` drives it with a policy.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from alignflow.components.config import StepRejectedStrategy
from alignflow.components.objectives.preference import conservative_epsilon

RejectedStrategy = StepRejectedStrategy


@dataclass(eq=False)
class Node:
    step: str  # the step that leads here; "" at the tree's first root
    parent: Node | None = None
    logp: float = 0.0  # log π(step | state), summed over the step's tokens, from the sampling pass
    n_tokens: int = 1
    terminal: bool = False
    ended: bool = False  # the policy emitted EOS after this step
    correct: bool | None = None  # set at terminal nodes by the verifier
    value: float = 0.0  # evaluation: self-evaluation confidence (scaled by depth) + outcome
    reward: float = 0.0  # r = value(node) − value(parent)
    N: int = 0
    Q: float = 0.0
    V: float = 0.0
    children: list[Node] = field(default_factory=list)
    node_id: int = -1

    @property
    def depth(self) -> int:
        return 0 if self.parent is None else self.parent.depth + 1

    def steps(self) -> list[str]:
        """The steps from the tree's first root to here, in order."""
        out: list[str] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            out.append(node.step)
            node = node.parent
        return out[::-1]

    def add_child(self, child: Node) -> Node:
        child.parent = self
        self.children.append(child)
        return child


def prior(node: Node, length_penalty: float = 1.25) -> float:
    """p(a|s) = exp(log π(a|s) / |a|^λ): a per-token-ish likelihood, so long steps are not punished
    for their length alone."""
    return math.exp(node.logp / max(1, node.n_tokens) ** length_penalty)


def puct(parent: Node, child: Node, c_puct: float = 1.0, length_penalty: float = 1.25) -> float:
    return child.Q + c_puct * prior(child, length_penalty) * math.sqrt(parent.N) / (1 + child.N)


def select_child(node: Node, c_puct: float = 1.0, length_penalty: float = 1.25) -> Node:
    """argmax PUCT; ties go to the earlier child, so selection is deterministic."""
    if not node.children:
        raise ValueError("select_child on a node without children")
    return max(node.children, key=lambda c: (puct(node, c, c_puct, length_penalty), -node.children.index(c)))


def select_leaf(root: Node, c_puct: float = 1.0, length_penalty: float = 1.25) -> Node:
    """Descend by PUCT until a node that is terminal or not expanded yet."""
    node = root
    while node.children and not node.terminal:
        node = select_child(node, c_puct, length_penalty)
    return node


def set_evaluation(child: Node, value: float) -> None:
    """An expanded child's value, its reward r = value − value(parent), and its initial Q = r."""
    child.value = value
    child.reward = value - (child.parent.value if child.parent is not None else 0.0)
    child.Q = child.reward + child.V


def backup(leaf: Node, stop: Node | None = None) -> None:
    """γ = 1. Leaf: Q = r + V, N += 1. Each ancestor up to ``stop`` (the current root, inclusive):
    V = Σ_c max(1, N_c)·Q_c / Σ_c max(1, N_c) over its children, N += 1, Q = r + V."""
    node: Node | None = leaf
    while node is not None:
        if node.children:  # every ancestor; the leaf too once it has been expanded
            weights = [max(1, c.N) for c in node.children]
            node.V = sum(w * c.Q for w, c in zip(weights, node.children, strict=True)) / sum(weights)
        node.N += 1
        node.Q = node.reward + node.V
        if node is stop:
            break
        node = node.parent


def best_child(node: Node) -> Node:
    """The root advances to the most-visited child; Q breaks ties (then the earlier child)."""
    if not node.children:
        raise ValueError("best_child on a node without children")
    return max(node.children, key=lambda c: (c.N, c.Q, -node.children.index(c)))


@dataclass
class StepPair:
    """One step-level preference: the shared context (earlier steps) and two candidate next steps."""

    prefix_steps: list[str]
    chosen: str
    rejected: str
    q_chosen: float
    q_rejected: float
    n_chosen: int
    n_rejected: int
    depth: int
    chosen_ended: bool = False  # the step ended the answer with EOS
    rejected_ended: bool = False

    @property
    def epsilon(self) -> float:
        """Conservative label smoothing from visit counts (``objectives.preference.conservative_epsilon``)."""
        return float(conservative_epsilon(self.n_chosen, self.n_rejected))


def extract_pairs(path: list[Node], rejected_strategy: RejectedStrategy = "worst", max_pairs: int = 8,
                  rng: random.Random | None = None) -> list[StepPair]:
    """Per root on the selected path (each root's children are the candidates at that depth):
    chosen = highest Q, rejected = lowest Q (``worst``) or any other child (``random``);
    depths with fewer than 2 children are skipped; at most ``max_pairs`` per tree."""
    if rejected_strategy not in ("worst", "random"):
        raise ValueError(f"unknown rejected_strategy '{rejected_strategy}'; expected 'worst' or 'random'")
    rng = rng or random.Random(0)
    pairs: list[StepPair] = []
    for root in path:
        if len(root.children) < 2:
            continue
        ranked = sorted(root.children, key=lambda c: (-c.Q, root.children.index(c)))
        chosen = ranked[0]
        rejected = ranked[-1] if rejected_strategy == "worst" else rng.choice(ranked[1:])
        if chosen.Q == rejected.Q:  # no preference to learn
            continue
        pairs.append(StepPair(root.steps(), chosen.step, rejected.step, chosen.Q, rejected.Q, chosen.N, rejected.N,
                              root.depth, chosen.ended, rejected.ended))
        if len(pairs) == max_pairs:
            break
    return pairs


def walk(root: Node) -> list[Node]:
    """Every node of the tree, depth-first, parents before children."""
    out: list[Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node.children))
    return out


def number_nodes(root: Node) -> None:
    """Stable ids in depth-first order, for JSON and pictures."""
    for index, node in enumerate(walk(root)):
        node.node_id = index


def to_dict(node: Node) -> dict[str, Any]:
    return {"id": node.node_id, "step": node.step, "logp": node.logp, "n_tokens": node.n_tokens,
            "terminal": node.terminal, "ended": node.ended, "correct": node.correct, "value": node.value,
            "reward": node.reward,
            "N": node.N, "Q": node.Q, "V": node.V, "children": [to_dict(c) for c in node.children]}


def from_dict(data: dict[str, Any], parent: Node | None = None) -> Node:
    node = Node(step=data["step"], parent=parent, logp=data["logp"], n_tokens=data["n_tokens"],
                terminal=data["terminal"], ended=data.get("ended", False), correct=data["correct"], value=data["value"],
                reward=data["reward"],
                N=data["N"], Q=data["Q"], V=data["V"], node_id=data["id"])
    node.children = [from_dict(c, node) for c in data["children"]]
    return node
