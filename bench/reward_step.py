"""Reward-model training step on SmolLM2-135M: the whole backbone vs only the top N blocks
(`reward.trainable_layers`), measured in one invocation on the same pairs.

    .venv/bin/python bench/reward_step.py --layers 4 8 --steps 3 --threads 2

Pairs are `builtin:constraints` instructions with their reference response (chosen) against the same
response with its first half cut (rejected): the lengths of the reward_model stage's pairs. Prints
seconds per step (the first step is a warm-up and not counted) and the ratio to the whole backbone.
"""

from __future__ import annotations

import argparse
import time

import torch

from alignflow.components.config import ModelConfig, RewardConfig
from alignflow.components.data.constraints import constraints_source
from alignflow.components.modeling.checkpoints import load_policy
from alignflow.components.modeling.reward_model import RewardModel, freeze_below_top_layers
from alignflow.components.trainers.reward import RewardPair, train_reward


def _pairs(n: int) -> list[RewardPair]:
    rows = constraints_source("prompts", 11, 1, n, 3)
    return [RewardPair(r["prompt"], r["completion"], r["completion"][: len(r["completion"]) // 2]) for r in rows]


def seconds_per_step(layers: int | None, pairs: list[RewardPair], steps: int, batch_size: int) -> tuple[float, int]:
    """Mean seconds of a BT training step after one warm-up step, and the trainable parameter count."""
    loaded = load_policy(ModelConfig(source="smollm2"))
    torch.manual_seed(0)
    model = RewardModel(loaded.model.requires_grad_(True))
    if layers is not None:
        freeze_below_top_layers(model, layers)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config = RewardConfig(lr=1e-5, epochs=1, batch_size=batch_size)
    marks: list[float] = []
    train_reward(model, loaded.tokenizer, pairs[: batch_size * (steps + 1)], config, seed=0,
                 on_step=lambda *_: marks.append(time.perf_counter()))
    return (marks[-1] - marks[0]) / (len(marks) - 1), trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = _pairs(args.batch_size * (args.steps + 1))
    full, n_full = seconds_per_step(None, pairs, args.steps, args.batch_size)
    print(f"threads {torch.get_num_threads()}, {args.batch_size} pairs per step, {args.steps} timed steps")
    print(f"| trainable | parameters | s / step | speed-up |\n|---|---|---|---|\n| whole backbone | {n_full:,} | "
          f"{full:.2f} | 1.00 |")
    for layers in args.layers:
        seconds, n = seconds_per_step(layers, pairs, args.steps, args.batch_size)
        print(f"| top {layers} blocks | {n:,} | {seconds:.2f} | {full / seconds:.2f} |")


if __name__ == "__main__":
    main()
