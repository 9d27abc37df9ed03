"""A searched tree as one self-contained HTML page: what the search did, node by node.

Every node shows its step, visits N, Q, value and prior log-prob; the roots the search advanced
through are outlined, terminal nodes marked ✓ / ✗ by the verifier, and the background runs from
red (low Q) to green (high Q). No scripts or external assets, so it opens from an MLflow artifact.
"""

from __future__ import annotations

import html

from alignflow.components.collection.mcts.tree import Node, walk


def _colour(q: float, low: float, high: float) -> str:
    t = 0.5 if high <= low else (q - low) / (high - low)
    red, green = int(255 - 90 * t), int(165 + 90 * t)
    return f"rgb({red},{green},170)"


def render_tree_html(root: Node, path: list[Node], title: str) -> str:
    nodes = walk(root)
    qs = [n.Q for n in nodes if n.parent is not None] or [0.0]
    low, high = min(qs), max(qs)
    on_path = {id(n) for n in path}

    def item(node: Node) -> str:
        mark = "" if not node.terminal else (" ✓" if node.correct else " ✗")
        step = html.escape(node.step) if node.parent is not None else "<i>(prompt)</i>"
        border = "2px solid #222" if id(node) in on_path else "1px solid #bbb"
        label = (f"<div class='n' style='background:{_colour(node.Q, low, high)};border:{border}'>"
                 f"<b>{step}</b>{mark}<br><small>N={node.N} Q={node.Q:.3f} value={node.value:.3f} "
                 f"logp={node.logp:.2f} depth={node.depth}</small></div>")
        children = "".join(item(c) for c in node.children)
        return f"<li>{label}{f'<ul>{children}</ul>' if children else ''}</li>"

    style = ("body{font-family:sans-serif;font-size:13px} ul{list-style:none;padding-left:22px;"
             "border-left:1px dotted #999} .n{display:inline-block;margin:3px 0;padding:3px 6px;border-radius:4px;"
             "max-width:720px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h3>{html.escape(title)}</h3>"
            f"<p>{len(nodes)} nodes; outlined: the roots the search advanced through.</p>"
            f"<ul>{item(root)}</ul></body></html>")
