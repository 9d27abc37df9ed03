"""Registry version formats on SmolLM2-135M: size, time and exactness (README "Serving a promoted model").

A LoRA checkpoint shaped like the pipeline's (the default ``lora`` section: r 16 on the 7 projections;
``lora_B`` drawn at a trained adapter's scale, as a fresh adapter is the identity) is registered against a
local ``mlflow server`` in both formats (``merged`` float32, ``adapter``); each is loaded through
``mlflow.pyfunc`` in a clean process (another HOME, alignflow unimportable) and answers one prompt
greedily, compared with the pipeline's own evaluation decoding of the checkpoint. Then merged float16 and
bfloat16 directories are compared with float32 on five prompts: largest logit difference and how many
greedy 48-token answers stay identical.

    python bench/model_formats.py --out /tmp/model-formats      # writes report.json there
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, cast

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignflow.components.config import LoraSettings  # noqa: E402
from alignflow.components.modeling.checkpoints import (  # noqa: E402
    attach_lora,
    load_checkpoint,
    load_from_directory,
    save_checkpoint,
    smollm2_directory,
)
from alignflow.components.modeling.export import write_model_directory  # noqa: E402
from alignflow.components.modeling.generation import generate_completions  # noqa: E402
from alignflow.components.platform.services import start_mlflow, stop_process  # noqa: E402
from alignflow.components.platform.tracking import Tracker  # noqa: E402
from alignflow.components.stages.register import Packaging, register_checkpoint  # noqa: E402
from tests.integration.portable import pyfunc_predict  # noqa: E402

PROMPTS = ["Tom has 12 apples and gives away 5. How many are left?", "What is 17 + 25?",
           "A box holds 6 eggs. How many eggs are in 4 boxes?", "Name a primary colour.",
           "Sara reads 9 pages a day. How many pages does she read in 3 days?"]


def lora_checkpoint(out: Path, scale: float) -> Path:
    base = smollm2_directory(Path("~/.cache/alignflow/models"))
    loaded = attach_lora(load_from_directory(base), LoraSettings(), seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return save_checkpoint(loaded, out, {"model_id": "bench-round2", "base_path": str(base), "parent": "bench-sft"})


def greedy(directory: Path, prompts: list[str], tokens: int) -> tuple[list[str], torch.Tensor]:
    """The pipeline's evaluation decoding (float32 compute) and the last-position logits of each prompt."""
    loaded = load_checkpoint(directory, merge=True)
    loaded.model.float()
    tok = loaded.tokenizer
    rendered = [cast(str, tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                  add_generation_prompt=True)) for p in prompts]
    texts = [c.text for c in generate_completions(loaded.model, tok, rendered, k=1, do_sample=False,
                                                  max_new_tokens=tokens, batch_size=1)]
    with torch.no_grad():
        logits = torch.stack([loaded.model(**tok(r, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
                              for r in rendered])
    return texts, logits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lora-scale", type=float, default=0.002)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    checkpoint = lora_checkpoint(out / "state" / "round-2", args.lora_scale)
    report["checkpoint_adapter_bytes"] = (checkpoint / "adapter_model.safetensors").stat().st_size

    service, process = start_mlflow(out / "mlflow")
    try:
        tracker = Tracker(service.url, "bench-model-formats")
        run = tracker.start_run("pipeline")
        for fmt in ("merged", "adapter"):
            start = time.perf_counter()
            version = register_checkpoint(tracker, f"bench-{fmt}", run, checkpoint, {"eval_accuracy": 0.0},
                                          Packaging(format=fmt, max_tokens=40))
            tags = tracker.get_model_version(f"bench-{fmt}", version).tags
            report[f"register_{fmt}"] = {"seconds": round(time.perf_counter() - start, 1),
                                         "version_bytes": int(tags["size_bytes"])}
        report["base_version_bytes"] = int(tracker.get_model_version("alignflow-base", "1").tags["size_bytes"])
        tracker.end_run(run)
        expected, _ = greedy(checkpoint, PROMPTS[:1], 40)
        for fmt in ("merged", "adapter"):
            start = time.perf_counter()
            got = pyfunc_predict(f"models:/bench-{fmt}@candidate",
                                 [{"input": {"messages": [{"role": "user", "content": PROMPTS[0]}]},
                                   "params": {"max_tokens": 40}}], out / f"home-{fmt}", service.url)
            report[f"pyfunc_{fmt}"] = {"load_and_answer_seconds": round(time.perf_counter() - start, 1),
                                       "equals_evaluation": got["outputs"][0]["choices"][0]["message"]["content"]
                                       == expected[0]}
    finally:
        stop_process(process.pid)

    reference, reference_logits = greedy(checkpoint, PROMPTS, 48)
    for dtype in ("float16", "bfloat16"):
        stored = write_model_directory(checkpoint, out / f"merged-{dtype}", merge=True, dtype=dtype)
        texts, logits = greedy(stored.path, PROMPTS, 48)
        report[f"merged_{dtype}"] = {"version_bytes": stored.size_bytes,
                                     "max_abs_logit_diff": round(float((logits - reference_logits).abs().max()), 4),
                                     "greedy48_identical": f"{sum(a == b for a, b in zip(texts, reference))}/"
                                                           f"{len(PROMPTS)}"}
    report["logit_scale"] = round(float(reference_logits.abs().max()), 2)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
