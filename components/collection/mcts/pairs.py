"""Step-level pairs from searched trees → pair-file rows the preference trainer reads.

The prompt of a row is the problem's prompt plus the steps before the fork (the shared prefix),
and chosen/rejected are the exact next-step continuations — with their separator, or with EOS
where the step ended the answer — so the trainer's log-probs start at the first diverging token
(step-level DPO). Each row keeps the tree's lineage and, in the conservative variant, its
visit-count ε as the row's label smoothing; a pair whose ε reaches 0.5 (the rejected step was
visited at least as often as the chosen one) states no preference and is left out.
"""

from __future__ import annotations

from typing import Any

from alignflow.components.collection.mcts.search import TreeResult
from alignflow.components.collection.mcts.tree import StepPair
from alignflow.components.data.schemas import PairRow


def _continuation(step: str, ended: bool, eos: str, separator: str) -> str:
    return step + (eos if ended else separator)


def step_pair_rows(results: list[TreeResult], eos: str, conservative: bool, lineage: dict[str, Any],
                   separator: str = "\n") -> list[PairRow]:
    rows: list[PairRow] = []
    for tree_index, result in enumerate(results):
        pair: StepPair
        for pair in result.pairs:
            if conservative and pair.epsilon >= 0.5:
                continue
            prefix = "".join(step + separator for step in pair.prefix_steps)
            rows.append(PairRow(
                problem_id=result.problem.problem_id, prompt=result.problem.prompt + prefix,
                chosen=_continuation(pair.chosen, pair.chosen_ended, eos, separator),
                rejected=_continuation(pair.rejected, pair.rejected_ended, eos, separator),
                score_chosen=pair.q_chosen, score_rejected=pair.q_rejected,
                label_smoothing=pair.epsilon if conservative else None, complete_responses=False,
                lineage={**lineage, "tree": tree_index, "depth": pair.depth, "n_chosen": pair.n_chosen,
                         "n_rejected": pair.n_rejected, "final_correct": result.final_correct}))
    return rows
