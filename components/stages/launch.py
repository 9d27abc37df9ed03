"""Stage ``train`` on several processes: ``launch.nproc_per_node`` torchrun ranks on this node (×
``launch.nnodes``), or the nodes of an Indexed Job on Kubernetes. One process: ``train_round``."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path
from typing import cast

from alignflow.components.config import PipelineConfig
from alignflow.components.modeling.checkpoints import is_adapter, load_tokenizer, read_metadata
from alignflow.components.platform.atomic import write_json_atomic
from alignflow.components.platform.distributed import check_local_ranks, torchrun_command
from alignflow.components.stages.common import StepHook, report_fit
from alignflow.components.stages.reference import cached_reference_logprobs
from alignflow.components.stages.results import Artifact, Checkpoint, PreferenceTrainResult
from alignflow.components.stages.train import round_examples, train_round

logger = logging.getLogger("alignflow.stages.launch")
ENTRY_MODULE = "alignflow.components.stages.train_entry"


def train_round_launched(config: PipelineConfig, policy: Checkpoint, reference: Checkpoint, pairs: Artifact,
                         round_index: int, out_dir: Path, ref_cache_dir: Path,
                         on_step: StepHook | None = None) -> PreferenceTrainResult:
    """``train_round`` on ``launch.nproc_per_node`` processes (× ``launch.nnodes``) started by torchrun.
    The reference log-probs are computed here first, once, so the ranks find them cached; rank 0's
    result (with the per-step history, replayed through ``on_step``) comes back as a file.

    Raises:
        RuntimeError: torchrun exited non-zero (its stderr's tail is in the message).
    """
    if config.launch.nproc_per_node == 1 and config.launch.nnodes == 1:
        return train_round(config, policy, reference, pairs, round_index, out_dir, ref_cache_dir, on_step)
    if config.launch.backend == "local":
        check_local_ranks(config.launch.nproc_per_node)
    base = policy.dir if not is_adapter(policy.dir) else Path(read_metadata(policy.dir)["base_path"])
    examples = round_examples(pairs, cast(str, load_tokenizer(base).eos_token))
    cached_reference_logprobs(reference, examples, pairs, config.preference, ref_cache_dir, config.content_hash(),
                              config.seed, f"round {round_index}")
    spec_dir = Path(out_dir).with_name(f"{Path(out_dir).name}.launch")
    spec = {"config": config.model_dump(mode="json"), "policy": policy.model_dump(),
            "reference": reference.model_dump(),
            "pairs": pairs.model_dump(), "round_index": round_index, "out_dir": str(out_dir),
            "ref_cache_dir": str(ref_cache_dir), "result_path": str(spec_dir / "result.json")}
    write_json_atomic(spec_dir / "spec.json", spec)
    if config.launch.backend == "kubernetes":
        _train_on_kubernetes(config, spec_dir / "spec.json", round_index)
    else:
        command = torchrun_command(ENTRY_MODULE, [str(spec_dir / "spec.json")], config.launch.nproc_per_node,
                                   config.launch.nnodes, config.launch.rdzv_endpoint)
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"torchrun ({' '.join(command)}) failed with exit {completed.returncode}:\n"
                               f"{completed.stderr[-4000:]}")
    result = PreferenceTrainResult.model_validate_json((spec_dir / "result.json").read_text())
    p = config.preference
    report_fit(result.fit, pairs.path, "preference", p.max_length, p.max_truncation_rate_warning)
    if on_step:
        for step, metrics in enumerate(result.history, start=1):
            on_step(step, metrics)
    return result


def _train_on_kubernetes(config: PipelineConfig, spec_path: Path, round_index: int) -> None:
    """The nodes are pods of an Indexed Job: they see the spec (and the policy, reference cache and output
    dir it names) only through the shared claim mounted at /shared, so the workspace must be there."""
    from alignflow.components.platform.k8s.multinode import SHARED_MOUNT, multinode_training_manifests
    from alignflow.components.platform.k8s.training_job import run_training_job, training_job_name

    spec_path = Path(spec_path).resolve()
    if not spec_path.is_relative_to(SHARED_MOUNT):
        raise ValueError(f"launch.backend: kubernetes: the training nodes read the launch spec from the shared claim "
                         f"at {SHARED_MOUNT}, but the workspace puts it at {spec_path}: set workspace (and "
                         f"state_dir) under {SHARED_MOUNT} and mount launch.kubernetes.shared_claim there in the "
                         f"flow's pod")
    k8s = config.launch.kubernetes
    name = training_job_name(config.content_hash(), round_index)
    manifests = multinode_training_manifests(name, k8s.image, config.launch.nnodes, config.launch.nproc_per_node,
                                             str(spec_path), namespace=k8s.namespace, shared_claim=k8s.shared_claim,
                                             credentials_secret=k8s.credentials_secret,
                                             node_selector=k8s.node_selector or None)
    asyncio.run(run_training_job(manifests, k8s.timeout_s, k8s.poll_s, log=logger.info))
