"""MCTS tree arithmetic on hand-built trees with numbers worked out by hand (ALGORITHMS.md §2)."""

import json
import math
import random

import pytest

from alignflow.components.collection.mcts.tree import (
    Node,
    backup,
    best_child,
    extract_pairs,
    from_dict,
    number_nodes,
    prior,
    puct,
    select_child,
    select_leaf,
    set_evaluation,
    to_dict,
)


def _root_with_children(values, logps=(-2.0, -2.0), n_tokens=(4, 4)):
    root = Node(step="", value=0.5)
    for i, (v, lp, n) in enumerate(zip(values, logps, n_tokens)):
        child = root.add_child(Node(step=f"s{i}", logp=lp, n_tokens=n))
        set_evaluation(child, v)
    return root


def test_prior_is_length_penalised():
    node = Node(step="x", logp=-4.0, n_tokens=4)
    assert prior(node, 1.25) == pytest.approx(math.exp(-4.0 / 4 ** 1.25))
    assert prior(node, 0.0) == pytest.approx(math.exp(-4.0))


def test_puct_by_hand():
    root = _root_with_children([0.7, 0.2])
    root.N = 4
    a, b = root.children
    a.N, b.N = 3, 0
    # a: Q = 0.2 (r = 0.7 − 0.5), b: Q = −0.3; prior p = exp(−2 / 4^1.25) ≈ 0.7022
    p = math.exp(-2.0 / 4 ** 1.25)
    assert puct(root, a) == pytest.approx(0.2 + p * 2 / 4)
    assert puct(root, b) == pytest.approx(-0.3 + p * 2 / 1)
    assert select_child(root) is b  # the unvisited child wins on exploration here
    assert select_child(root, c_puct=0.1) is a  # with little exploration, Q decides


def test_backup_by_hand():
    root = _root_with_children([0.7, 0.2])  # Q: a = 0.2, b = −0.3
    backup(root)
    # V = (1·0.2 + 1·(−0.3)) / 2 = −0.05, N = 1, Q = r(root)=0 + V
    assert root.V == pytest.approx(-0.05) and root.N == 1 and root.Q == pytest.approx(-0.05)
    a = root.children[0]
    for i, v in enumerate([0.9, 0.4]):  # expand a: values 0.9, 0.4 → r = 0.2, −0.3 relative to a's 0.7
        set_evaluation(a.add_child(Node(step=f"a{i}")), v)
    backup(a)
    assert a.V == pytest.approx(-0.05) and a.N == 1 and a.Q == pytest.approx(0.2 - 0.05)
    # root: weights max(1, N): a has N=1 → 1, b has N=0 → 1; V = (0.15 + (−0.3)) / 2
    assert root.N == 2 and root.V == pytest.approx((0.15 - 0.3) / 2)
    # visit a twice more through a terminal grandchild: weights change
    leaf = a.children[0]
    leaf.terminal = True
    backup(leaf)
    backup(leaf)
    assert leaf.N == 2 and leaf.Q == pytest.approx(0.2)  # no children: Q = r + 0
    assert a.N == 3
    assert a.V == pytest.approx((2 * 0.2 + 1 * (-0.3)) / 3)
    assert root.V == pytest.approx((3 * a.Q + 1 * (-0.3)) / 4)


def test_backup_stops_at_the_current_root():
    outer = _root_with_children([0.7, 0.2])
    inner = outer.children[0]
    set_evaluation(inner.add_child(Node(step="x")), 1.0)
    backup(inner, stop=inner)
    assert inner.N == 1 and outer.N == 0


def test_selection_descends_to_an_unexpanded_or_terminal_node():
    root = _root_with_children([0.7, 0.2])
    backup(root)
    leaf = select_leaf(root, c_puct=0.0)
    assert leaf is root.children[0]
    leaf.terminal = True
    set_evaluation(leaf.add_child(Node(step="never")), 0.0)  # a terminal node is never descended
    assert select_leaf(root, c_puct=0.0) is leaf


def test_best_child_by_visits_then_q():
    root = _root_with_children([0.7, 0.2, 0.9], logps=(-1, -1, -1), n_tokens=(1, 1, 1))
    root.children[0].N, root.children[1].N, root.children[2].N = 3, 5, 5
    assert best_child(root) is root.children[2]  # tie on N=5 broken by Q (0.4 > −0.3)


def test_pair_extraction_on_a_fixed_tree():
    root = _root_with_children([0.7, 0.2, 0.5], logps=(-1, -1, -1), n_tokens=(1, 1, 1))  # Q 0.2, −0.3, 0.0
    for child, n in zip(root.children, (6, 1, 3)):
        child.N = n
    second = root.children[0]
    set_evaluation(second.add_child(Node(step="only")), 1.0)  # one child: skipped
    pairs = extract_pairs([root, second])
    assert len(pairs) == 1
    pair = pairs[0]
    assert (pair.chosen, pair.rejected, pair.depth, pair.prefix_steps) == ("s0", "s1", 0, [])
    assert pair.epsilon == pytest.approx(1 / 7)
    randoms = {extract_pairs([root], "random", rng=random.Random(seed))[0].rejected for seed in range(20)}
    assert randoms == {"s1", "s2"}
    deeper = root.children[0]
    for i, v in enumerate([0.9, 0.1]):
        set_evaluation(deeper.add_child(Node(step=f"d{i}")), v)
    many = extract_pairs([root, deeper], max_pairs=1)
    assert len(many) == 1
    assert extract_pairs([root, deeper])[1].prefix_steps == ["s0"]
    with pytest.raises(ValueError, match="rejected_strategy"):
        extract_pairs([root], "best")  # pyright: ignore[reportArgumentType] — the wrong value under test


def test_tree_round_trips_through_json():
    root = _root_with_children([0.7, 0.2])
    backup(root)
    number_nodes(root)
    back = from_dict(json.loads(json.dumps(to_dict(root))))
    assert [c.step for c in back.children] == ["s0", "s1"] and back.children[1].parent is back
    assert back.V == root.V and back.children[0].node_id == 1


def test_rendered_tree_shows_every_node_with_its_counts():
    from alignflow.components.collection.mcts.render import render_tree_html

    root = _root_with_children([0.7, 0.2])
    root.children[0].step = "3 < 4 & done"
    backup(root)
    page = render_tree_html(root, [root, root.children[0]], "tree p1")
    assert page.count("N=") == 3 and "Q=0.200" in page and "Q=-0.300" in page
    assert "3 &lt; 4 &amp; done" in page  # step text is escaped
    assert page.count("2px solid") == 2  # the path's roots are outlined
