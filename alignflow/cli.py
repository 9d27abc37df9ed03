"""`alignflow`: run the pipeline, manage the local stack, run single stages for `dvc repro`.

The top of the import package: it may import flows (Prefect is imported only inside the commands
that run them, so `alignflow --help` and the stage commands start fast); the stage commands call
``components.stages`` directly, without Prefect.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional
from uuid import UUID

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alignflow.components.config import ConfigError, PipelineConfig, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Workflow-orchestrated alignment rounds with lineage.")
console = Console()

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="params.yaml to read")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override, e.g. -s rounds.n_rounds=1")]


def _load(config: Optional[Path], overrides: Optional[list[str]]) -> PipelineConfig:
    if config is None and Path("params.yaml").exists():
        config = Path("params.yaml")
    from alignflow.components.scoring.python import check_user_functions

    try:
        cfg = load_config(config, overrides or [])
        check_user_functions(cfg)  # a python scorer's function imports now, not after SFT
        return cfg
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None


def configure_environment(cfg: PipelineConfig) -> dict[str, str]:
    """Point Prefect and MLflow at the local stack (if `alignflow up` ran) and persist results."""
    from alignflow.components.platform.services import load_stack

    state = Path(cfg.state_dir).resolve()
    (state / "prefect-home").mkdir(parents=True, exist_ok=True)
    stack = load_stack(state)
    env = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_LOCAL_STORAGE_PATH": str(state / "prefect-results"),
        "PREFECT_HOME": str(state / "prefect-home"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    if "prefect" in stack and not os.environ.get("PREFECT_API_URL"):
        env["PREFECT_API_URL"] = f"{stack['prefect']['url']}/api"
    if "mlflow" in stack and not os.environ.get("MLFLOW_TRACKING_URI") and not cfg.tracking.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = stack["mlflow"]["url"]
    if cfg.model.torch_threads:
        # before torch loads: OpenMP reads these once, for every thread — torch.set_num_threads only sets the
        # calling thread's, and Prefect runs tasks on other threads
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(cfg.model.torch_threads)
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in env}


@app.command()
def run(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Run the full alignment pipeline (SFT → rounds → register → gated promotion)."""
    cfg = _load(config, set_)
    configure_environment(cfg)
    from alignflow.flows.pipeline import alignment_pipeline  # imports Prefect

    with _clean_failure("alignflow run"):
        result = alignment_pipeline(cfg.model_dump(mode="json"))
    _print_summary(result)


@contextmanager
def _clean_failure(command: str) -> Iterator[None]:
    """An error a re-run would repeat (bad data or config, a user's scorer, a model or alias that does not
    exist…: ``deterministic_errors``) ends the command with its message as the last line and exit 1 — not a
    Python traceback (Prefect's log above keeps that). Anything else propagates with its traceback."""
    from alignflow.tasks.context import deterministic_errors

    try:
        yield
    except deterministic_errors() as exc:
        console.print("(finished stages are cached: fix what follows and run the same command again)")
        console.print(f"[red]{command} failed:[/red] {escape(str(exc))}", soft_wrap=True)  # last; paths stay whole
        raise typer.Exit(1) from None


@app.command("continue")
def continue_(config: ConfigOpt = None, set_: SetOpt = None,
              run_key: Annotated[Optional[str], typer.Option(
                  help="idempotency key: a second run with the same key returns the version the first registered "
                       "(a deployment run's default: its scheduled time)")] = None) -> None:
    """The lineage's next round: the production policy in (model.source, default
    models:/<tracking.registered_model>@production), prompts no earlier round used, one round, register,
    gate against production. Run `alignflow run` once first; then this any number of times."""
    cfg = _load(config, set_)
    from alignflow.components.platform import registry

    if registry.parse_model_uri(cfg.model.source) is None:
        source = f"models:/{cfg.tracking.registered_model}@production"
        console.print(f"model.source={cfg.model.source!r} names no registered version: continuing from {source}")
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"source": source})})
    configure_environment(cfg)
    from alignflow.components.platform.lineage_lock import LineageBusyError
    from alignflow.flows.continuing import continue_rounds  # imports Prefect

    try:
        with _clean_failure("alignflow continue"):  # a missing model, alias or version (RegistryLookupError) too
            result = continue_rounds(cfg.model_dump(mode="json"), run_key)
    except LineageBusyError as exc:
        console.print(f"[yellow]{exc}[/yellow]")
        raise typer.Exit(3) from None
    console.print(f"lineage {result.lineage_id}, round {result.round_index} from {result.policy_in}: "
                  f"{result.status}. {result.message}")
    if result.status == "trained":
        console.print(f"{result.metric}: {result.baseline_metric:.4f} (policy in) → {result.metric_value:.4f} "
                      f"(models:/{result.registered_model}/{result.version}); aliases set: "
                      f"{', '.join(result.promotion.get('aliases_set', [])) or 'none'}")
    if result.parent_run_id:
        console.print(f"MLflow: {result.tracking_uri} (run {result.parent_run_id})")


@app.command("judge-loop")
def judge_loop(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Self-rationalization judge loop: seed SFT judge → sample → curate → DPO → eval, T times; register."""
    cfg = _load(config, set_)
    configure_environment(cfg)
    from alignflow.flows.judge import judge_loop as flow  # imports Prefect

    result = flow(cfg.model_dump(mode="json"))
    table = Table(title="alignflow judge-loop (held-out labelled judgments)")
    for column in ("judge", "exact-score accuracy", "MAE", "pairwise agreement", "malformed"):
        table.add_column(column)
    for t, m in enumerate(result.history):
        table.add_row("seed (SFT)" if t == 0 else f"iteration {t}", f"{m['judge/exact_accuracy']:.3f}",
                      f"{m['judge/mae']:.3f}", f"{m['judge/pairwise_agreement']:.3f}",
                      f"{m['judge/malformed_rate']:.3f}")
    console.print(table)
    promo = result.promotion
    verdict = f"→ {', '.join(promo['aliases_set'])}" if promo["passed"] else "stays candidate"
    console.print(f"judge: models:/{result.registered_model}/{result.version} {verdict} ({promo['reason']})")
    console.print(f"MLflow: {result.tracking_uri} (experiment '{result.experiment}', run {result.parent_run_id})")


@app.command()
def synthesize(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """One synthesized pair file: the policy pool answers, the judge rates per aspect, ratings binarized."""
    cfg = _load(config, set_)
    configure_environment(cfg)
    from alignflow.flows.synthesize import synthesize as flow  # imports Prefect

    result = flow(cfg.model_dump(mode="json"))
    pairs = result.pairs
    console.print(f"{pairs.n_pairs} pairs ({cfg.synthesis.rejected_strategy}) from {pairs.prompts_with_a_pair} "
                  f"prompts → {pairs.pairs.path}")
    console.print(f"judge: {result.judge.source}; quality report: {result.quality.report_json.path}")
    console.print(f"MLflow: {result.tracking_uri} (experiment '{result.experiment}', run {result.parent_run_id})")


@app.command()
def promote(config: ConfigOpt = None, set_: SetOpt = None,
            version: Annotated[Optional[str],
                               typer.Option(help="registered version; default: the candidate alias")] = None
            ) -> None:
    """Gate a registered policy version (accuracy delta, KL budget, length drift, judge win-rate) and
    move it staging → production; with promotion.require_approval, wait for `alignflow approve`."""
    cfg = _load(config, set_)
    configure_environment(cfg)
    from alignflow.flows.promote import promote as flow  # imports Prefect

    # the data stage writes under data/<stage>-<code version>/: the newest eval split of this config
    found = sorted((Path(cfg.workspace).resolve() / cfg.content_hash() / "data").glob("*/eval.jsonl"),
                   key=lambda p: p.stat().st_mtime)
    result = flow(cfg.model_dump(mode="json"), version, str(found[-1]) if found else None)
    for gate in result["gates"]:
        console.print(f"  {gate['gate']:<16} {gate['status']:<8} {gate['value']!s:<22} limit {gate['limit']!s:<8} "
                      f"{gate['detail']}")
    moved = ", ".join(result["aliases_set"]) or "none"
    console.print(f"{result['registered_model']} v{result['candidate_version']}: {result['decision']} "
                  f"(aliases set: {moved}); report {result['report']['markdown']}")


@app.command()
def approve(flow_run_id: Annotated[str, typer.Argument(help="the paused/suspended promote run")],
            reviewer: Annotated[str, typer.Option(help="who approves")],
            reject: Annotated[bool, typer.Option(help="reject instead")] = False,
            comment: Annotated[str, typer.Option()] = "", config: ConfigOpt = None) -> None:
    """Answer a promote run waiting for human approval (the Prefect UI's resume form does the same)."""
    configure_environment(_load(config, None))
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(UUID(flow_run_id), run_input={"approved": not reject, "reviewer": reviewer, "comment": comment})
    console.print(f"{'rejected' if reject else 'approved'} by {reviewer}: flow run {flow_run_id} resumes")


@app.command()
def rollback(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Point `production` back at the previous production version."""
    cfg = _load(config, set_)
    configure_environment(cfg)
    from alignflow.components.platform import registry
    from alignflow.components.platform.tracking import Tracker, resolve_tracking_uri

    tracker = Tracker(resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.state_dir), cfg.tracking.experiment)
    try:
        left, restored = registry.rollback(tracker, cfg.tracking.registered_model)
    except LookupError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{cfg.tracking.registered_model}: production v{left} → v{restored}")


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="directory to write (absent or empty)")],
    alias: Annotated[Optional[str], typer.Option(help="registry alias to export (default: production)")] = None,
    version: Annotated[Optional[str], typer.Option(help="registered version number, instead of --alias")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="fold a LoRA-adapter version into its base: full "
                                                        "weights that plain transformers loads")] = False,
    model: Annotated[Optional[str], typer.Option(help="registered model (default: tracking.registered_model; "
                                                      "e.g. alignflow-judge)")] = None,
    config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """Write a registered version as a plain Hugging Face model directory (weights, tokenizer, chat template,
    generation config, model card) that `AutoModelForCausalLM.from_pretrained(DIR)` loads without alignflow.
    A full-weight version is copied as registered; an adapter version is folded into its registered base with
    --merge, else written as the adapter with its base in DIR/base (loading it then needs peft). A reward
    model version is copied as registered (its score head needs alignflow or the registered pyfunc)."""
    import tempfile

    from alignflow.components.modeling.checkpoints import read_metadata
    from alignflow.components.modeling.export import directory_bytes, write_model_directory
    from alignflow.components.modeling.reward_model import is_reward_model
    from alignflow.components.platform import registry
    from alignflow.components.platform.atomic import atomic_directory, link_or_copy
    from alignflow.components.platform.tracking import Tracker, resolve_tracking_uri

    cfg = _load(config, set_)
    configure_environment(cfg)
    if alias and version:
        console.print("[red]give --alias or --version, not both[/red]")
        raise typer.Exit(2)
    out = out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        console.print(f"[red]{out} exists and is not an empty directory: choose a new --out[/red]")
        raise typer.Exit(2)
    name = model or cfg.tracking.registered_model
    tracker = Tracker(resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.state_dir), cfg.tracking.experiment)
    found = tracker.get_model_version(name, version) if version else registry.version_for_alias(
        tracker, name, alias or "production")
    if found is None:
        console.print(f"[red]'{name}' has no version with alias '{alias or 'production'}' at "
                      f"{tracker.tracking_uri}[/red]")
        raise typer.Exit(1)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        hf, label = registry.download_version(tracker, name, "", Path(tmp), found)
        if is_reward_model(hf):  # weights plus a score head plain transformers does not know: copied as registered
            with atomic_directory(out) as target:
                shutil.copytree(hf, target, dirs_exist_ok=True, copy_function=link_or_copy)
            console.print(f"{label} → {out}: an alignflow reward model ({directory_bytes(out) / 1e6:.1f} MB). Its "
                          f"score head is reward_head.safetensors, which plain transformers does not load: load it "
                          f"with alignflow.components.modeling.reward_model.load_reward_model, or serve the "
                          f"registered version (mlflow models serve -m models:/{name}/{found.version})")
            return
        card = hf / "README.md"
        generation = json.loads((hf / "generation_config.json").read_text())
        exported = write_model_directory(hf, out, merge=merge, dtype=None, metadata=read_metadata(hf),
                                         readme=card.read_text() if card.exists() else None,
                                         generation={k: v for k, v in generation.items()
                                                     if k not in ("transformers_version", "_from_model_config")},
                                         bundle_base=not merge)
    how = ("needs peft: the adapter's base is in base/" if exported.format == "adapter"
           else "loads with plain transformers")
    console.print(f"{label} → {exported.path}: {exported.format} weights, {exported.dtype}, "
                  f"{exported.size_bytes / 1e6:.1f} MB ({how})")


def _print_summary(result: Any) -> None:
    table = Table(title="alignflow run")
    table.add_column("what")
    table.add_column("where / value")
    table.add_row(f"held-out {result.metric} per round", " → ".join(f"{a:.3f}" for a in result.metric_history))
    table.add_row("MLflow", f"{result.tracking_uri}  (experiment '{result.experiment}', run {result.parent_run_id})")
    if result.tracking_uri.startswith("http"):
        table.add_row("MLflow UI", f"{result.tracking_uri}/#/experiments")
    else:
        table.add_row("MLflow UI", f"mlflow ui --backend-store-uri {result.tracking_uri}  (or `alignflow up` first)")
    table.add_row("Prefect UI",
                  os.environ.get("PREFECT_API_URL", "ephemeral (run `alignflow up` for a UI)").removesuffix("/api"))
    promo = result.promotion
    verdict = (f"v{result.version} → {', '.join(promo['aliases_set'])}" if promo["passed"]
               else f"v{result.version} stays candidate")
    table.add_row("model", f"models:/{result.registered_model}@candidate ({verdict})")
    table.add_row("gate", promo["reason"])
    if getattr(result, "reward_model", None):
        table.add_row("reward model (scored the rounds)", result.reward_model)
    table.add_row("policy checkpoint", result.policy.path)
    table.add_row("artifacts (DVC-tracked)", result.workspace)
    console.print(table)


@app.command()
def up(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    prefect: bool = typer.Option(True, help="also start a Prefect server"),
    artifacts: Annotated[Optional[str], typer.Option(
        help="MLflow artifact store, e.g. s3://bucket/mlflow (credentials from the AWS_* environment)")] = None,
    s3_endpoint: Annotated[Optional[str],
                           typer.Option(help="S3 endpoint URL for a non-AWS store (MinIO, SeaweedFS…)")] = None,
) -> None:
    """Start the local stack: mlflow server (sqlite; local or S3 artifacts) and prefect server, on loopback."""
    from alignflow.components.platform.services import load_stack, save_stack, start_mlflow, start_prefect

    cfg = _load(config, set_)
    state = Path(cfg.state_dir).resolve()
    running = load_stack(state)
    if running:
        console.print(f"already up: {json.dumps(running, indent=1)}")
        return
    services = []
    extra_env = {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint} if s3_endpoint else None
    mlflow_service, _ = start_mlflow(state, port=5000 if _port_free(5000) else None,
                                     artifacts_destination=artifacts, extra_env=extra_env)
    services.append(mlflow_service)
    if prefect:
        prefect_service, _ = start_prefect(state, port=4200 if _port_free(4200) else None)
        services.append(prefect_service)
    save_stack(state, services)
    for service in services:
        console.print(f"[green]{service.name}[/green] {service.url}  (pid {service.pid}, log {service.log})")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@app.command()
def report(config: ConfigOpt = None, set_: SetOpt = None,
           run_id: Annotated[Optional[str], typer.Option(help="pipeline run id; default: the latest")] = None) -> None:
    """Print the per-round accuracy curve and wall-time split of a pipeline run (markdown)."""
    from alignflow.components.evaluation.report import round_table
    from alignflow.components.platform.tracking import Tracker, resolve_tracking_uri

    cfg = _load(config, set_)
    configure_environment(cfg)
    tracker = Tracker(resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.state_dir), cfg.tracking.experiment)
    print(round_table(tracker, run_id))


@app.command()
def compare(config: ConfigOpt = None, set_: SetOpt = None,
            run_id: Annotated[Optional[list[str]], typer.Option(help="pipeline run ids (repeat); default: every "
                                                                    "finished pipeline run in the experiment")] = None,
            plot: Annotated[Optional[Path],
                            typer.Option(help="also write the accuracy plot here (PNG)")] = None,
            metric: Annotated[str, typer.Option(help="the eval metric compared per round, e.g. "
                                                     "eval/constraints/pass_rate")] = "eval/accuracy",
            lineage: Annotated[Optional[str], typer.Option(
                help="one lineage's rounds across every run (pipeline + continue), by its lineage.id")] = None
            ) -> None:
    """Compare pipeline runs round by round (e.g. MCTS vs on-policy DPO): held-out accuracy (or
    ``--metric``), pairs, data-collection seconds; optionally a PNG of it by round and by collection
    seconds. ``--lineage``: every round one lineage ever ran (``alignflow run`` then each ``continue``),
    with the gate's verdict on each version."""
    from alignflow.components.evaluation.compare import collect, comparison_table, plot_comparison
    from alignflow.components.platform.tracking import Tracker, resolve_tracking_uri

    cfg = _load(config, set_)
    configure_environment(cfg)
    tracker = Tracker(resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.state_dir), cfg.tracking.experiment)
    if lineage:
        from alignflow.components.evaluation.compare import lineage_series

        try:
            one, verdicts = lineage_series(tracker, lineage, metric)
        except LookupError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(1) from None
        series = [one]
        print(comparison_table(series))
        for index, verdict in sorted(verdicts.items()):
            print(f"round {index}: {verdict}")
    else:
        try:
            series = collect(tracker, run_id, metric)
        except LookupError as exc:  # no finished run yet, or a run id that is not there
            console.print(f"[red]{escape(str(exc))}[/red] (experiment '{cfg.tracking.experiment}': run "
                          f"`alignflow run` with this config first)", soft_wrap=True)
            raise typer.Exit(1) from None
        print(comparison_table(series))
    if plot:
        print(f"plot: {plot_comparison(series, plot, f'{metric}, experiment {cfg.tracking.experiment}')}")


@app.command()
def down(config: ConfigOpt = None) -> None:
    """Stop the services `alignflow up` started."""
    from alignflow.components.platform.services import load_stack, stack_file, stop_process

    cfg = _load(config, None)
    state = Path(cfg.state_dir).resolve()
    for name, info in load_stack(state).items():
        stop_process(info["pid"])
        console.print(f"stopped {name} (pid {info['pid']})")
    stack_file(state).unlink(missing_ok=True)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="data | sft | rounds | eval")],
    out: Annotated[Path, typer.Option(help="output directory of this stage")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="the data stage's output")] = None,
    policy: Annotated[Optional[Path], typer.Option(help="policy checkpoint to start from / evaluate")] = None,
) -> None:
    """Run one stage without Prefect — what `dvc repro` calls (see dvc.yaml)."""
    from alignflow.components.stages import base_model, data, sft, sharded
    from alignflow.components.stages.results import Artifact

    cfg = _load(config, set_)
    out.mkdir(parents=True, exist_ok=True)
    result: Any
    if name == "data":
        result = data.prepare_data(cfg, out)
    elif name == "sft":
        base = base_model.prepare_base(cfg).checkpoint
        result = sft.run_sft(cfg, base, Artifact.of(_need(data_dir, "--data-dir") / "sft.jsonl"), out / "checkpoint")
    elif name == "rounds":
        result = _rounds_without_prefect(cfg, _need(data_dir, "--data-dir"), _need(policy, "--policy"), out)
    elif name == "eval":
        result = sharded.evaluate_launched(cfg, _checkpoint(_need(policy, "--policy")), None,
                                           Artifact.of(_need(data_dir, "--data-dir") / "eval.jsonl"), out, cfg.seed)
    else:
        console.print(f"[red]unknown stage '{name}'[/red]; expected data, sft, rounds or eval")
        raise typer.Exit(2)
    console.print_json(result.model_dump_json() if hasattr(result, "model_dump_json") else json.dumps(result))


def _need(value: Optional[Path], flag: str) -> Path:
    if value is None:
        console.print(f"[red]this stage needs {flag}[/red]")
        raise typer.Exit(2)
    return value


def _checkpoint(path: Path) -> Any:
    from alignflow.components.modeling.checkpoints import read_metadata
    from alignflow.components.stages.results import Checkpoint

    return Checkpoint(path=str(path), model_id=read_metadata(path).get("model_id", f"local:{path.resolve()}"))


def _rounds_without_prefect(cfg: PipelineConfig, data_dir: Path, policy_dir: Path, out: Path) -> dict:
    from alignflow.components.stages import launch, mcts, pairs, quality, score, sharded, strength
    from alignflow.components.stages.results import Artifact

    if cfg.rounds.kind == "synthesized":
        console.print("[red]synthesized rounds resolve their judge in the MLflow registry: run them with "
                      "`alignflow run`, not as a DVC stage[/red]")
        raise typer.Exit(2)
    train, heldout = Artifact.of(data_dir / "prompts.jsonl"), Artifact.of(data_dir / "eval.jsonl")
    policy = reference = _checkpoint(policy_dir)
    for round_index in range(1, cfg.rounds.n_rounds + 1):
        round_dir = out / f"round-{round_index}"
        if cfg.rounds.kind == "mcts":
            collected = mcts.mcts_collect(cfg, policy, train, round_index, round_dir)
        else:
            sampled = sharded.sample_launched(cfg, policy, train, round_index, round_dir)
            scored = score.score(cfg, sampled.samples, round_dir)
            collected = pairs.make_pairs(cfg, scored, sampled.policy_model_id, round_index, sampled.seed,
                                         round_dir)
        report = quality.report_pair_file(collected.pairs, heldout, cfg.quality, round_dir / "quality",
                                          f"pair quality, r{round_index}")
        report.raise_on_failures()
        training_pairs = collected.pairs
        if cfg.reward.strength_mode != "none":
            training_pairs = strength.preference_strength(cfg, reference, training_pairs, round_index, round_dir).pairs
        trained = launch.train_round_launched(cfg, policy, reference, training_pairs, round_index,
                                              round_dir / "checkpoint", Path(cfg.state_dir) / "reference-logps")
        policy = trained.checkpoint
        if cfg.preference.reference == "previous_round":
            reference = policy
    # A stable path for the eval stage. Adapters are a few MB, so a copy is cheap (and DVC
    # handles plain files better than links); a full-weight checkpoint is copied too.
    final = out / "final"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(policy.dir, final)
    return {"final_policy": str(final), "source": policy.path}


data_app = typer.Typer(no_args_is_help=True, help="Validate and profile data sources without training.")
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    sources: Annotated[Optional[list[str]],
                       typer.Argument(help="files or builtin:<task>; default: data.sources")] = None,
    role: Annotated[str, typer.Option(help="the role the SOURCE arguments are checked for: sft, prompts, "
                                           "preferences or eval")] = "prompts",
    format_: Annotated[str, typer.Option("--format", help="force a format (default: detect)")] = "auto",
    config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """Validate every row of the data sources (the config's, or SOURCE… for one --role) and profile
    them: rows, format, mean prompt/response tokens, truncation rate at preference.max_length. Exit
    code 1 on any bad row (the first 20 errors are listed, with file, row and field)."""
    from alignflow.components.data.sources import SourceSpec, check_sources, load_role, profile
    from alignflow.components.modeling.checkpoints import load_tokenizer, materialize_base
    from alignflow.components.stages.data import builtin_sources

    cfg = _load(config, set_)
    if sources:
        try:
            specs = {role: [SourceSpec(source=s, format=format_) for s in sources]}
        except ValueError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(2) from None
        prefix = "sources"
    else:
        specs = {r: list(getattr(cfg.data.sources, r)) for r in ("sft", "prompts", "preferences", "eval")}
        prefix = "data.sources"
    cache_dir = Path(cfg.state_dir) / "datasets"
    report = None
    for name, role_specs in specs.items():
        part = check_sources({name: role_specs}, cache_dir=cache_dir, seed=cfg.data.seed,
                             builtins=builtin_sources(cfg, name), key_prefix=prefix)
        report = part if report is None else report.model_copy(update={
            "ok": report.ok and part.ok, "errors": (report.errors + part.errors)[:20],
            "truncated": report.truncated or part.truncated, "sources": report.sources + part.sources})
    assert report is not None
    table = Table(title="alignflow data check")
    for column in ("source", "role", "format", "rows", "errors", "mean prompt tok", "mean response tok",
                   f"truncated @ {cfg.preference.max_length}"):
        table.add_column(column)
    tokenizer = load_tokenizer(materialize_base(cfg.model, cfg.seed, cfg.state_dir)) if report.ok else None
    loaded: dict[str, list] = {}  # role -> the rows the profile loaded (checked below, not loaded again)
    for source in report.sources:
        stats: dict = {}
        if tokenizer is not None and source.rows:
            spec = next(s for s in specs[source.role] if s.source == source.source)
            rows = load_role([spec], source.role, cfg.data.seed, builtin_sources(cfg, source.role),
                             cache_dir=cache_dir, key_prefix=source.key.rsplit("[", 1)[0])
            loaded.setdefault(source.role, []).extend(rows)
            stats = profile(rows, tokenizer, cfg.preference.max_length, prompt_template=cfg.data.prompt_template,
                            system_prompt=cfg.data.system_prompt)
        table.add_row(source.source, source.role, source.format or "?", str(source.rows), str(source.errors),
                      f"{stats['mean_prompt_tokens']:.1f}" if stats else "–",
                      f"{stats['mean_response_tokens']:.1f}" if stats else "–",
                      f"{stats['truncation_rate']:.1%}" if stats else "–")
    console.print(table)
    for error in report.errors:
        console.print(f"[red]{escape(str(error))}[/red]")
    if report.truncated:
        console.print(f"[red]… stopped after {len(report.errors)} errors[/red]")
    if report.ok:  # across rows: constraints columns as a constraints scorer reads them; for the config's roles
        # together, also the eval split and eval vs training prompts (load_roles checks the columns too)
        from alignflow.components.data.formats import DataFormatError
        from alignflow.components.stages.data import check_constraints_columns, contamination_message, load_roles

        contaminated: list[str] = []
        try:
            if sources:
                check_constraints_columns(cfg, loaded)
            else:
                _, contaminated = load_roles(cfg)
        except DataFormatError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]\n[red]FAILED[/red]")
            raise typer.Exit(1) from None
        if contaminated:
            console.print(f"[yellow]{escape(contamination_message(contaminated))} (data.fail_on_contamination "
                          f"is false: a run goes on)[/yellow]")
    console.print("[green]OK[/green]" if report.ok else f"[red]FAILED: {len(report.errors)} error(s)[/red]")
    raise typer.Exit(report.exit_code)


def main() -> None:
    try:
        app()
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
