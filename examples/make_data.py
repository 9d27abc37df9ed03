"""Write the example project's data files: the built-in arithmetic task exported to the formats users
bring (TRL's conversational messages for SFT, prompt + answer rows, explicit-prompt preference pairs;
ShareGPT and Alpaca demonstrations and implicit-prompt pairs as well).
Nothing here comes from a public dataset.

    .venv/bin/python examples/make_data.py     # rewrites examples/data/*.jsonl (deterministic)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from alignflow.components.data.arithmetic import generate_dataset
from alignflow.components.data.prompts import INSTRUCTION
from alignflow.components.judges.labelled import perturbed_solutions

OUT = Path(__file__).resolve().parent / "data"


def write(name: str, rows: list[dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{OUT / name}: {len(rows)} rows")


def main() -> None:
    splits = generate_dataset(seed=1234, n_sft=128, n_train_prompts=256, n_eval=200, difficulties=[1, 2],
                              max_operand=20)
    rng = random.Random(0)
    # SFT demonstrations as conversations (TRL's conversational language-modeling rows)
    write("sft.jsonl", [{"messages": [{"role": "user", "content": f"{p.question}\n{INSTRUCTION}"},
                                      {"role": "assistant", "content": p.solution}]} for p in splits["sft"]])
    # prompts and eval: prompt-only rows; `answer` is the gold value the scorer reads
    for name, split in (("prompts.jsonl", "train"), ("eval.jsonl", "eval")):
        write(name, [{"prompt": f"{p.question}\n{INSTRUCTION}", "answer": p.answer, "difficulty": p.difficulty}
                     for p in splits[split]])
    # preference pairs with an explicit prompt: the worked solution over a flawed one
    pairs = []
    for p in splits["sft"]:
        flawed = [s for s in perturbed_solutions(p, rng) if s != p.solution]
        if flawed:
            pairs.append({"prompt": f"{p.question}\n{INSTRUCTION}", "chosen": p.solution,
                          "rejected": rng.choice(flawed)})
    write("preferences.jsonl", pairs)
    # the other shapes people bring, 32 rows each: ShareGPT and Alpaca demonstrations, and preference pairs
    # with an implicit prompt (the shared leading messages of chosen and rejected)
    few = splits["sft"][:32]
    write("sft_sharegpt.jsonl", [{"conversations": [{"from": "human", "value": f"{p.question}\n{INSTRUCTION}"},
                                                    {"from": "gpt", "value": p.solution}]} for p in few])
    write("sft_alpaca.jsonl", [{"instruction": INSTRUCTION, "input": p.question, "output": p.solution} for p in few])
    write("preferences_implicit.jsonl", [
        {"chosen": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["rejected"]}]}
        for r in pairs[:32]])


if __name__ == "__main__":
    main()
