"""On-policy generation: Hugging Face ``generate`` (dynamic cache; static cache, compiled) vs our static
sampler (components/modeling/sampler.py), same model, prompts, sampling and hardware, one invocation.

Every method samples ``--samples`` completions of ``--new-tokens`` tokens for each of ``--prompts``
arithmetic prompts in one call (top-k 50 from the generation config, temperature 1; EOS disabled, so
every method generates exactly prompts × samples × new-tokens tokens). Each method runs in its own
process, with a fresh compile cache directory:

- call 1: the first call of a round (cold: compilation, graph capture);
- call 2: a new model object with other weights, same shape — the next round's policy, loaded from its
  checkpoint — in the same process: the **round-2 stall**;
- call 3: the same model again: the steady state; tokens/s = tokens / its time.

The stall of a call is its time minus call 3's. Methods that compile or capture also run once more in
a **new process on the now-warm on-disk cache** (a round started by new processes, e.g. torchrun
ranks). ``generate`` with the dynamic cache compiles nothing: its call 2 is its steady state.

    python bench/generation_throughput.py --device cuda --shape smollm2-135m llama-1b          # 64 × 8 × 256
    python bench/generation_throughput.py --device cpu --shape tiny --prompts 4 --samples 2 --new-tokens 16

Writes the table (markdown) and the raw numbers (JSON) to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignflow.components.data.arithmetic import generate_split  # noqa: E402
from alignflow.components.data.prompts import render_prompt  # noqa: E402
from alignflow.components.modeling.checkpoints import load_tokenizer  # noqa: E402
from alignflow.components.modeling.generation import CanGenerate  # noqa: E402
from alignflow.components.modeling.sampler import StaticGenerate, collect_stats, release_engines  # noqa: E402
from bench.dpo_throughput import SHAPES, build_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# name → (what it is, whether it compiles or captures anything)
METHODS: dict[str, tuple[str, bool]] = {
    "hf-dynamic": ("HF generate, dynamic cache", False),
    "hf-static": ("HF generate, static cache, not compiled", False),
    "hf-static-compiled": ("HF generate, static cache, compiled (reduce-overhead)", True),
    "ours": ("alignflow static sampler (compile=auto: CUDA graph on CUDA, eager on CPU)", True),
    "ours-inductor": ("alignflow static sampler, inductor + CUDA graph", True),
}
DEFAULT_METHODS = {"cuda": ["hf-dynamic", "hf-static-compiled", "ours", "ours-inductor"],
                   "cpu": ["hf-dynamic", "hf-static", "ours"]}


def prompts_for(tokenizer, n: int) -> list[str]:
    return [render_prompt(tokenizer, p.question) for p in generate_split(n, 0, [1, 2, 3], 50, "bench-gen")]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_model(tokenizer, shape: str, seed: int, args: argparse.Namespace):
    model = build_model(tokenizer, shape, seed, device=args.device)
    model.config.use_cache = True
    model.generation_config.eos_token_id = None  # every row runs to --new-tokens
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    return cast(Any, model).to(device=args.device, dtype=dtype).eval()  # (to's overloads reject both keywords)


def one_call(method: str, model, enc, args: argparse.Namespace) -> dict[str, float]:
    common: dict[str, Any] = dict(max_new_tokens=args.new_tokens, num_return_sequences=args.samples, do_sample=True,
                                  temperature=1.0, top_p=1.0, pad_token_id=args.pad_token_id)
    sync(args.device)
    start = time.perf_counter()
    with torch.inference_mode(), collect_stats() as stats:
        torch.manual_seed(0)
        if method == "hf-dynamic":
            out = cast(CanGenerate, model).generate(**enc, eos_token_id=None, **common)
        elif method in ("hf-static", "hf-static-compiled"):
            from transformers import CompileConfig

            compiled = method == "hf-static-compiled"
            config = CompileConfig(mode="reduce-overhead")
            if compiled and args.device != "cuda":
                cast(Any, config)._compile_all_devices = True  # generate compiles on CUDA only unless told
            out = cast(CanGenerate, model).generate(**enc, eos_token_id=None, cache_implementation="static",
                                                    compile_config=config, disable_compile=not compiled, **common)
        else:
            compile = "inductor" if method == "ours-inductor" else "auto"
            out = StaticGenerate(model, compile).generate(**enc, eos_token_id=-1, **common)
    sync(args.device)
    seconds = time.perf_counter() - start
    new = out.shape[1] - enc["input_ids"].shape[1]
    assert new == args.new_tokens, (method, new)
    return {"seconds": seconds, "sampler_stall_s": stats.stall_s, "sampler_prefill_s": stats.prefill_s,
            "sampler_decode_s": stats.decode_s}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One method in this process: calls as the module docstring says."""
    tokenizer = load_tokenizer(args.tokenizer)
    args.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts_for(tokenizer, args.prompts), return_tensors="pt", padding=True,
                    add_special_tokens=False).to(args.device)
    first = make_model(tokenizer, args.shape, 0, args)
    with torch.inference_mode():  # CUDA context, cuBLAS and allocator up before anything is timed
        first(input_ids=enc["input_ids"][:1, :8])
    sync(args.device)
    calls = [one_call(args.only, first, enc, args)]
    if args.single_call:
        return {"calls": calls}
    second = make_model(tokenizer, args.shape, 1, args)
    calls.append(one_call(args.only, second, enc, args))
    if METHODS[args.only][1]:
        calls.append(one_call(args.only, second, enc, args))
    release_engines()
    return {"calls": calls, "prompt_width": int(enc["input_ids"].shape[1])}


def run_method(method: str, args: argparse.Namespace, cache_dir: Path, single_call: bool) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--only", method, "--shape", args.shape_one, "--device", args.device,
            "--prompts", str(args.prompts), "--samples", str(args.samples), "--new-tokens", str(args.new_tokens),
            "--dtype", args.dtype, "--tokenizer", str(args.tokenizer)] + (["--single-call"] if single_call else [])
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "inductor"),
           "TRITON_CACHE_DIR": str(cache_dir / "triton"), "ALIGNFLOW_COMPILE_CACHE": str(cache_dir / "alignflow")}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr[-3000:]}"}
    return json.loads(lines[-1][len("RESULT "):])


def summarize(method: str, cold: dict[str, Any], warm: dict[str, Any] | None, tokens: int) -> dict[str, Any]:
    if "error" in cold:
        return {"method": method, "error": cold["error"]}
    times = [c["seconds"] for c in cold["calls"]]
    steady = times[-1]
    row: dict[str, Any] = {"method": method, "tokens_per_s": tokens / steady, "steady_s": steady,
                           "first_call_s": times[0], "stall_first_s": times[0] - steady,
                           "stall_round2_s": times[1] - steady if len(times) == 3 else None,
                           "calls": cold["calls"]}
    if warm is not None:
        row["stall_new_process_s"] = (warm["calls"][0]["seconds"] - steady) if "calls" in warm else None
        row["warm_error"] = warm.get("error")
    return row


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=["smollm2-135m", "llama-1b"])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=None)
    parser.add_argument("--new-process", nargs="*", choices=sorted(METHODS), default=None,
                        help="methods that also run in a new process on the warm cache (default: every method that "
                             "compiles or captures; none: leave the flag empty)")
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/generation-<time>.md")
    parser.add_argument("--only", choices=sorted(METHODS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--single-call", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if args.tokenizer is None:
        from alignflow.components.modeling.checkpoints import smollm2_directory

        args.tokenizer = smollm2_directory(Path("~/.cache/alignflow/models").expanduser())
    if args.only:
        args.shape = args.shape[0]
        print("RESULT " + json.dumps(measure(args)))
        return

    methods = args.methods or DEFAULT_METHODS[args.device]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    tokens = args.prompts * args.samples * args.new_tokens
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    lines = [f"# Generation throughput, {device_name}, {stamp}, commit {commit}", "",
             f"`{' '.join([Path(sys.executable).name, *sys.argv])}`", "",
             f"torch {torch.__version__}, {args.dtype} weights; {args.prompts} prompts × {args.samples} samples × "
             f"{args.new_tokens} new tokens = {tokens} tokens per call; sampling top-k 50, temperature 1, no EOS.", ""]
    everything: dict[str, Any] = {"device": device_name, "commit": commit, "args": {k: str(v) for k, v in
                                                                                    vars(args).items()}, "shapes": {}}
    for shape in args.shape:
        args.shape_one = shape
        rows = []
        with tempfile.TemporaryDirectory(prefix="genbench-") as tmp:
            for method in methods:
                cache = Path(tmp) / method
                started = time.perf_counter()
                cold = run_method(method, args, cache, single_call=False)
                again = METHODS[method][1] if args.new_process is None else method in args.new_process
                warm = run_method(method, args, cache, single_call=True) if again and "error" not in cold else None
                row = summarize(method, cold, warm, tokens)
                row["wall_s"] = time.perf_counter() - started
                rows.append(row)
                print(f"[{shape}] {method}: " + (row.get("error") or f"{row['tokens_per_s']:.0f} tokens/s, "
                      f"first-call stall {row['stall_first_s']:.1f} s ({row['wall_s']:.0f} s wall)"), flush=True)
        base = {r["method"]: r["tokens_per_s"] for r in rows if "error" not in r}
        n_params = sum(p.numel() for p in build_model(load_tokenizer(args.tokenizer), shape, 0, "meta").parameters())
        lines += [f"## {shape} ({n_params / 1e6:.0f}M params)", "",
                  "| method | tokens/s | × HF dynamic | × HF static compiled | steady call s | first call s | "
                  "stall: first call s | stall: round 2, same process s | stall: new process, warm disk cache s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {METHODS[r['method']][0]} | failed: {r['error'].splitlines()[-1][:200]} |"
                             + " |" * 7)
                continue
            vs_dyn = r["tokens_per_s"] / base["hf-dynamic"] if "hf-dynamic" in base else None
            vs_static = r["tokens_per_s"] / base["hf-static-compiled"] if "hf-static-compiled" in base else None
            lines.append(f"| {METHODS[r['method']][0]} | {r['tokens_per_s']:.0f} | {fmt(vs_dyn, 2, '×')} | "
                         f"{fmt(vs_static, 2, '×')} | {r['steady_s']:.2f} | {r['first_call_s']:.2f} | "
                         f"{r['stall_first_s']:.2f} | {fmt(r['stall_round2_s'], 2)} | "
                         f"{fmt(r.get('stall_new_process_s'), 2)} |")
        lines.append("")
        everything["shapes"][shape] = rows
    table = "\n".join(lines)
    print("\n" + table)
    out = args.out or RESULTS / f"generation-{args.device}-{stamp}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
    out.with_suffix(".json").write_text(json.dumps(everything, indent=2))
    print(f"\nwritten: {out} (+ .json)")


if __name__ == "__main__":
    main()
