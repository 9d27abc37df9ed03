"""Our preference trainer vs TRL's DPOTrainer: same model, data, batch and hardware, one process.

Both start from the same random-init weights, train sigmoid DPO for one epoch over the same
text pairs with the same batch size, max length, learning rate and precision, and both
precompute reference log-probs (TRL: ``precompute_ref_log_probs=True``; its default of a second
model forwarded every step is slower still). Timed: text → trained weights (tokenization,
reference pass, training loop), with the loop also reported alone. Each trainer runs in its own
process after a short warm-up run, so CUDA initialisation and the other's memory count for neither.

    python bench/dpo_throughput.py --device cpu --shape tiny                          # CPU
    python bench/dpo_throughput.py --device cuda --shape smollm2-135m --bf16          # GPU
    python bench/dpo_throughput.py --device cuda --shape llama-1b --bf16
    python bench/dpo_throughput.py --device cpu --shape tiny --packing              # + padding-free row
    python bench/dpo_throughput.py --device cuda --shape llama-1b --bf16 --packing --bf16-master --compile

``--bf16-master`` adds a row with bf16 parameters and fp32 master weights (``preference.bf16_master_weights``;
packed when ``--packing``), ``--compile`` one more with the decoder's forward compiled as well
(``preference.compile_model``); their ratios are also given against our fp32-master row.

TRL is a bench-only dependency (``pip install -e '.[bench]'``); without it (or with ``--no-trl``) its row
is left out. MFU counts the same model FLOPs for every row (6·N per trained token, 2·N per reference
token; the LM head only where a response token is predicted) against the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignflow.components.config import PreferenceConfig  # noqa: E402
from alignflow.components.data.arithmetic import generate_split  # noqa: E402
from alignflow.components.data.prompts import render_prompt  # noqa: E402
from alignflow.components.modeling.checkpoints import LoadedModel, load_tokenizer  # noqa: E402
from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs, train_preference  # noqa: E402


class Shape(TypedDict):
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int


SHAPES = {  # Llama shapes, SmolLM2's 49k vocabulary
    "tiny": Shape(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
    "smollm2-135m": Shape(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                          num_key_value_heads=3),
    "llama-1b": Shape(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                      num_key_value_heads=8),
}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core peak (SXM)
TRAINERS = ["trl", "alignflow", "alignflow-packed", "alignflow-bf16master", "alignflow-bf16master-compiled"]


def build_model(tokenizer, shape: str, seed: int, device: str = "cpu"):
    """Random init from the shape's config, on ``device`` (a 1B model initialises in seconds on a GPU,
    not half a minute on the CPU; "meta" only to count parameters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **SHAPES[shape])
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.config.use_cache = False
    return model


def build_pairs(tokenizer, n: int, problems_per_prompt: int, seed: int) -> list[PreferenceExample]:
    """Arithmetic prompts with several questions each; chosen = worked solutions, rejected = the
    same solutions with off-by-one answers (same length, so pair lengths match as in real data)."""
    rng = random.Random(seed)
    problems = generate_split(n * problems_per_prompt, seed, [1, 2, 3], 50, "bench")
    eos = tokenizer.eos_token
    pairs = []
    for i in range(n):
        group = problems[i * problems_per_prompt:(i + 1) * problems_per_prompt]
        prompt = render_prompt(tokenizer, "\n".join(p.question for p in group))
        chosen = "\n".join(p.solution for p in group)
        rejected = "\n".join(p.solution.replace(f"The answer is {p.answer}.",
                                                f"The answer is {p.answer + rng.choice([-1, 1])}.")
                             for p in group)
        pairs.append(PreferenceExample(prompt, chosen + eos, rejected + eos))
    return pairs


def count_tokens(tokenizer, pairs, max_length: int) -> tuple[int, int]:
    """(all tokens, response tokens) over chosen + rejected sequences, after truncation."""
    total = response = 0
    for p in pairs:
        prompt = len(tokenizer(p.prompt, add_special_tokens=False)["input_ids"])
        for text in (p.chosen, p.rejected):
            r = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            total += min(max_length, prompt + r)
            response += min(r, max_length)
    return total, response


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def run_ours(base, tokenizer, pairs, args) -> dict:
    model = copy.deepcopy(base).to(args.device)
    master = args.only.startswith("alignflow-bf16master")
    cfg = PreferenceConfig(loss_type="sigmoid", beta=0.1, lr=args.lr, epochs=1, batch_size=args.batch_size,
                           max_length=args.max_length, warmup_steps=0, max_grad_norm=10.0,
                           autocast_bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing,
                           packing=args.only == "alignflow-packed" or (master and args.packing),
                           pack_length=args.pack_length, bf16_master_weights=master,
                           compile_model=args.only.endswith("-compiled"))
    loaded = LoadedModel(model=model, tokenizer=tokenizer, model_id="bench", path=None)
    reset_memory(args.device)
    sync(args.device)
    start = time.perf_counter()
    # the reference is the initial policy: score it before training, as the pipeline does
    ref = reference_logprobs(loaded, pairs, cfg, batch_size=args.ref_batch_size or args.batch_size)
    sync(args.device)
    loop_start = time.perf_counter()
    result = train_preference(loaded, pairs, ref, cfg, seed=0)
    sync(args.device)
    end = time.perf_counter()
    out = {"total_s": end - start, "loop_s": end - loop_start, "ref_s": loop_start - start,
           "peak_gib": peak_memory_gib(args.device),
           # the epoch mean, as TRL reports training_loss
           "mean_loss": sum(h["train/loss"] for h in result.history) / len(result.history),
           "final_loss": result.history[-1]["train/loss"]}
    del model, loaded
    return out


def run_trl(base, tokenizer, pairs, args) -> dict:
    # trl is the bench-only extra ('.[bench]'), not installed in the dev environment pyright runs in
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer  # pyright: ignore[reportMissingImports]

    model = copy.deepcopy(base).to(args.device)
    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    with tempfile.TemporaryDirectory() as tmp:
        config = DPOConfig(
            output_dir=tmp, per_device_train_batch_size=args.batch_size, num_train_epochs=1,
            learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=10.0,
            max_length=args.max_length, beta=0.1, loss_type=["sigmoid"],
            precompute_ref_log_probs=True, precompute_ref_batch_size=args.ref_batch_size or args.batch_size,
            bf16=args.bf16, fp16=False, gradient_checkpointing=args.gradient_checkpointing,
            report_to=[], logging_steps=10**9, save_strategy="no", disable_dropout=True,
            dataloader_num_workers=0, use_cpu=args.device == "cpu", seed=0,
        )
        reset_memory(args.device)
        sync(args.device)
        start = time.perf_counter()
        trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
        sync(args.device)
        loop_start = time.perf_counter()
        output = trainer.train()
        sync(args.device)
        end = time.perf_counter()
    out = {"total_s": end - start, "loop_s": end - loop_start, "ref_s": loop_start - start,
           "peak_gib": peak_memory_gib(args.device), "mean_loss": output.training_loss}
    del trainer, model
    return out


def model_flops(base, tokens: int, response_tokens: int) -> float:
    """Training (6·N) plus one reference forward (2·N) per token; LM head only on response tokens."""
    head = base.config.vocab_size * base.config.hidden_size
    body = sum(p.numel() for p in base.parameters()) - base.get_input_embeddings().weight.numel()
    if not base.config.tie_word_embeddings:
        body -= head
    return 8 * (body * tokens + head * response_tokens)


def measure_one(args: argparse.Namespace) -> dict:
    """One trainer in this process: a 2-batch warm-up, then the timed run."""
    tokenizer = load_tokenizer(args.tokenizer)
    base = build_model(tokenizer, args.shape, seed=0, device=args.device)
    pairs = build_pairs(tokenizer, args.pairs, args.problems_per_prompt, seed=0)
    run = run_trl if args.only == "trl" else run_ours
    run(base, tokenizer, pairs[: 2 * args.batch_size], args)
    return run(base, tokenizer, pairs, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ref-batch-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--problems-per-prompt", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, fp32 weights (both trainers)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--tokenizer", type=Path, default=None, help="a tokenizer dir (default: SmolLM2's, converted)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--packing", action="store_true",
                        help="also run our trainer padding-free (packing=True) as a third row")
    parser.add_argument("--pack-length", type=int, default=None,
                        help="tokens per packed row (default: the batch's longest row)")
    parser.add_argument("--bf16-master", action="store_true",
                        help="also run our trainer with bf16 parameters and fp32 master weights")
    parser.add_argument("--compile", action="store_true",
                        help="also run the bf16-master trainer with its decoder forward compiled")
    parser.add_argument("--no-trl", action="store_true", help="leave TRL out (it is left out when not installed)")
    parser.add_argument("--trainers", nargs="+", choices=TRAINERS, default=None,
                        help="exactly these rows (default: from --packing, --bf16-master, --compile)")
    parser.add_argument("--only", choices=TRAINERS, default=None,
                        help="(internal) measure one trainer in this process and print its result")
    args = parser.parse_args()

    if args.tokenizer is None:
        from alignflow.components.modeling.checkpoints import smollm2_directory

        args.tokenizer = smollm2_directory(Path("~/.cache/alignflow/models").expanduser())
    if args.only:
        print("RESULT " + json.dumps(measure_one(args)))
        return

    # Each trainer runs in its own process, so neither inherits the other's allocations,
    # compiled kernels or allocator state.
    results = {}
    import importlib.util

    with_trl = not args.no_trl and importlib.util.find_spec("trl") is not None
    names = (["trl"] if with_trl else []) + ["alignflow"] + (["alignflow-packed"] if args.packing else []) + (
        ["alignflow-bf16master"] if args.bf16_master or args.compile else []) + (
        ["alignflow-bf16master-compiled"] if args.compile else [])
    if args.trainers:
        names = [n for n in args.trainers if n != "trl" or with_trl]
    if not with_trl:
        print("TRL not installed (pip install -e '.[bench]') or --no-trl: its row is left out", flush=True)
    for name in names:
        argv = [sys.executable, __file__, *sys.argv[1:], "--only", name, "--tokenizer", str(args.tokenizer)]
        proc = subprocess.run(argv, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"{name} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        results[name] = json.loads(lines[-1][len("RESULT "):])

    tokenizer = load_tokenizer(args.tokenizer)
    base = build_model(tokenizer, args.shape, seed=0, device="meta")  # only counted
    pairs = build_pairs(tokenizer, args.pairs, args.problems_per_prompt, seed=0)
    tokens, response_tokens = count_tokens(tokenizer, pairs, args.max_length)
    flops = model_flops(base, tokens, response_tokens)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    bf16_anywhere = args.bf16 or args.bf16_master or args.compile
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None) if bf16_anywhere else None
    n_params = sum(p.numel() for p in base.parameters())
    print(f"\n{args.shape} ({n_params / 1e6:.0f}M params) on {device_name}; {args.pairs} pairs, "
          f"batch {args.batch_size}, "
          f"max_length {args.max_length}, {'bf16 autocast' if args.bf16 else 'fp32'}"
          f"{', gradient checkpointing' if args.gradient_checkpointing else ''}; "
          f"{tokens} tokens ({response_tokens} response)")
    print("| trainer | pairs/s | tokens/s | loop pairs/s | peak GiB | MFU | loop MFU | mean train loss | final loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        r["pairs_per_s"] = args.pairs / r["total_s"]
        r["tokens_per_s"] = tokens / r["total_s"]
        r["loop_pairs_per_s"] = args.pairs / r["loop_s"]
        r["mfu"] = flops / r["total_s"] / peak if peak else None
        # the loop alone: training FLOPs (6·N of the 8·N) over the loop's time
        r["loop_mfu"] = 0.75 * flops / r["loop_s"] / peak if peak else None
        mem = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        loop_mfu = f"{100 * r['loop_mfu']:.1f}%" if r["loop_mfu"] is not None else "-"
        final = f"{r['final_loss']:.4f}" if "final_loss" in r else "-"
        print(f"| {name} | {r['pairs_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['loop_pairs_per_s']:.1f} | "
              f"{mem} | {mfu} | {loop_mfu} | {r['mean_loss']:.4f} | {final} |")
    ratio = results["alignflow"]["pairs_per_s"] / results["trl"]["pairs_per_s"] if "trl" in results else None
    # against TRL, and against our fp32-master row laid out as the bf16-master rows are (packed with --packing)
    ours = "alignflow-packed" if args.packing and "alignflow-packed" in results else "alignflow"
    for base in [b for b in ("trl", ours) if b in results]:
        for name in [n for n in results if n not in ("trl", base)]:
            print(f"throughput ratio {name} / {base}: "
                  f"{results[name]['pairs_per_s'] / results[base]['pairs_per_s']:.2f}x (loop only: "
                  f"{results[name]['loop_pairs_per_s'] / results[base]['loop_pairs_per_s']:.2f}x)"
                  + (f", final loss {results[name]['final_loss'] - results[base]['final_loss']:+.4f}"
                     if "final_loss" in results[name] and "final_loss" in results[base] else ""))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "device": device_name,
                                         "tokens": tokens, "response_tokens": response_tokens, "ratio": ratio,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
