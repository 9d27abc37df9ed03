"""Our MCTS expansion vs the published code's way of doing it: same search, same model, same sizes.

Both runs use ``components.mcts.search.search`` (the same PUCT, backup and tree sizes); only
the policy calls differ:

- ours (``StepPolicy``): every leaf of every tree expanded in one batched ``generate``, each
  prefix encoded once and its KV cache repeated for the k children, step log-probs from the
  sampling pass, all self-evaluations in one forward continuing each child's own KV cache
  (``self_eval_layout: continuation``; a middle row re-encodes the published fresh prompt
  instead, to show what that layout costs);
- naive (``NaiveStepPolicy`` below, as in the released MCTS-DPO code): one ``generate`` per child
  re-encoding the whole prefix, a separate forward per child for its log-prob, one forward per
  self-evaluation;
- ours on the static sampler (``components/modeling/sampler.py``, ``sampling.backend=static``, the default
  on CUDA): the same expansion with the static cache and a captured decode step (eager on CPU); the
  other alignflow rows use Hugging Face ``generate`` explicitly, as they did before it existed.

Reported: nodes (children) created per second, tokens encoded, and the ratios.

    python bench/mcts_throughput.py --device cpu --shape tiny --problems 8
    python bench/mcts_throughput.py --device cuda --shape smollm2-135m --problems 32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import cast

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignflow.components.collection.mcts.policy import Candidate, StepPolicy, cut_step  # noqa: E402
from alignflow.components.collection.mcts.search import SearchProblem, search  # noqa: E402
from alignflow.components.collection.mcts.tree import walk  # noqa: E402
from alignflow.components.config import MCTSConfig  # noqa: E402
from alignflow.components.data.arithmetic import generate_split  # noqa: E402
from alignflow.components.data.prompts import render_prompt  # noqa: E402
from alignflow.components.modeling.checkpoints import load_tokenizer  # noqa: E402
from alignflow.components.modeling.generation import CanGenerate  # noqa: E402
from alignflow.components.modeling.logprobs import position_ids_for  # noqa: E402
from alignflow.components.modeling.sampler import collect_stats  # noqa: E402
from alignflow.components.trainers.common import model_device  # noqa: E402
from bench.dpo_throughput import SHAPES, build_model  # noqa: E402


class NaiveStepPolicy(StepPolicy):
    """One child at a time, the whole prefix re-encoded for each, log-probs by a second forward."""

    @torch.inference_mode()
    def sample_steps(self, contexts: list[str], k: int, seed: int, self_eval=None) -> list[list[Candidate]]:
        assert self_eval is None, "the naive policy self-evaluates with fresh prompts"
        tok, device = self.tokenizer, model_device(self.model)
        results = []
        for i, context in enumerate(contexts):
            ids = tok(context, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
            row = []
            for j in range(k):
                torch.manual_seed(seed * 1000 + i * k + j)
                out = cast(CanGenerate, self.model).generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=self.temperature,
                    top_k=0, top_p=1.0, max_new_tokens=self.max_new_tokens, stop_strings=["\n"], tokenizer=tok,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                self.expanded_tokens += ids.shape[1]
                full = out[:, :]
                logits = self.model(input_ids=full, position_ids=position_ids_for(torch.ones_like(full))).logits.float()
                new = full[0, ids.shape[1]:]
                logps = torch.log_softmax(logits[0, ids.shape[1] - 1:-1], dim=-1).gather(-1, new.unsqueeze(-1))
                row.append(cut_step(new.tolist(), logps.squeeze(-1).tolist(), cast(int, tok.eos_token_id),
                                    self._decode))
            results.append(row)
        return results

    @torch.inference_mode()
    def probabilities_of(self, prompts: list[str], answers: list[str], batch_size: int = 1) -> list[list[float]]:
        out: list[list[float]] = []
        for prompt in prompts:  # one forward per self-evaluation
            out += StepPolicy.probabilities_of(self, [prompt], answers, batch_size=1)
        return out


def problems(tokenizer, n: int, seed: int) -> list[SearchProblem]:
    rows = generate_split(n, seed, difficulties=[1, 2], max_operand=20, split="mcts-bench")
    return [SearchProblem(r.id, r.question, r.answer, render_prompt(tokenizer, r.question, ""), r.solution)
            for r in rows]


def run(policy: StepPolicy, items, cfg: MCTSConfig, device: str) -> dict:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = search(policy, items, cfg, seed=0)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    nodes = sum(len(walk(r.root)) - 1 for r in results)
    return {"seconds": seconds, "nodes": nodes, "nodes_per_s": nodes / seconds,
            "expansions": sum(r.n_expanded for r in results), "pairs": sum(len(r.pairs) for r in results),
            "tokens_encoded": policy.expanded_tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--n-iters", type=int, default=2)
    parser.add_argument("--actions", type=int, default=4, help="children per expansion (n_init_actions = n_actions)")
    parser.add_argument("--depth-limit", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--skip", nargs="+", default=[], choices=["naive", "alignflow, fresh self-eval", "alignflow",
                                                                  "alignflow, static sampler"],
                        help="rows to leave out (speed-ups are against naive, else against alignflow)")
    args = parser.parse_args()
    if args.tokenizer is None:
        from alignflow.components.modeling.checkpoints import smollm2_directory

        args.tokenizer = smollm2_directory(Path("~/.cache/alignflow/models").expanduser())
    tokenizer = load_tokenizer(args.tokenizer)
    model = build_model(tokenizer, args.shape, seed=0, device=args.device).eval()
    model.config.use_cache = True
    cfg = MCTSConfig(n_iters=args.n_iters, first_root_iterations_factor=2, depth_limit=args.depth_limit,
                     n_init_actions=args.actions, n_actions=args.actions, breadth_limit=args.actions,
                     max_new_tokens_per_step=args.max_new_tokens, filter=False)
    items = problems(tokenizer, args.problems, seed=0)
    fresh = cfg.model_copy(update={"self_eval_layout": "fresh"})
    results = {}
    rows = [("naive", NaiveStepPolicy, fresh, "hf"), ("alignflow, fresh self-eval", StepPolicy, fresh, "hf"),
            ("alignflow", StepPolicy, cfg, "hf"), ("alignflow, static sampler", StepPolicy, cfg, "static")]
    rows = [row for row in rows if row[0] not in args.skip]
    for name, cls, layout, backend in rows:
        warm = cls(model, tokenizer, args.max_new_tokens, backend=backend)
        warm.sample_steps([items[0].prompt], 1, seed=0)  # warm-up (for the static sampler: its first graphs)
        policy = cls(model, tokenizer, args.max_new_tokens, cfg.temperature, backend=backend)
        with collect_stats() as stats:
            results[name] = run(policy, items, layout, args.device)
        results[name]["stall_s"] = stats.stall_s
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"\n{args.shape} on {device_name}; {args.problems} trees, {args.actions} actions, n_iters {args.n_iters} "
          f"(first root ×2), depth {args.depth_limit}, ≤{args.max_new_tokens} tokens/step")
    print("| search | nodes | expansions | seconds | nodes/s | tokens encoded (prefixes + self-eval) | "
          "of which graph building s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['nodes']} | {r['expansions']} | {r['seconds']:.1f} | {r['nodes_per_s']:.2f} | "
              f"{r['tokens_encoded']} | {r['stall_s']:.1f} |")
    for base in [b for b in ("naive", "alignflow") if b in results]:
        for name in [n for n in results if n not in ("naive", base)]:
            print(f"speed-up {name} / {base}: {results[name]['nodes_per_s'] / results[base]['nodes_per_s']:.2f}x "
                  f"nodes/s")


if __name__ == "__main__":
    main()
