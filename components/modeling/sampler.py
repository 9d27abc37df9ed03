"""A static-cache sampler: the decode loop of ``generate`` rebuilt for the GPU's speed, testable on CPU.

Hugging Face ``generate`` with its dynamic cache grows every layer's keys and values by concatenation,
runs the logits processors and the stopping criteria in Python and reads a flag back from the device
after every token. Here one call is:

- **prefill** once per distinct prompt (eager, the prompts left-padded as ``generate`` pads them), its
  keys and values copied k times into a ``transformers.StaticCache`` whose shape is bucketed — rows up
  to a power of two, the prompt block up to a multiple of ``PROMPT_BUCKET``, the cache up to a multiple
  of ``CACHE_BUCKET`` — so the same few shapes recur across calls and rounds;
- **decode steps** that are one pure function of device tensors: the step's attention mask and
  positions come from the cache's own position counter, the next token is chosen on the device
  (greedy argmax, or temperature / top-k / top-p sampling by inverting the row's cumulative distribution
  at a counter-based uniform, so no generator state is read or advanced), finished rows write padding.
  Nothing is read back per token: on CUDA the step is captured once in a CUDA graph
  (``compile="cuda_graph"``) and replayed,
  or compiled by inductor and then captured (``"inductor"``), and the host only checks every
  ``CHECK_EVERY`` steps whether rows are still running;
- **retirement**: at a check, when half of the rows or more have finished (EOS, or a stop token), the
  running rows are moved to the front of the cache and the loop continues on a graph for half as many
  rows (a prefix view of the same buffers: no new memory); when all rows have finished the call ends.

Randomness: each row gets a 32-bit key from the torch generator (so ``torch.manual_seed`` before a
call fixes its samples, as it does for ``generate``), and the uniform that picks its token at generated
position t is a hash of (row key, t). A row's samples therefore do not depend on which other rows share
its batch, on retirement or on the device's generator: the same seed gives the same samples run to run
(up to the rounding of the row's own logits, which batch shapes can change in the last bits).
The distribution is the one ``generate`` samples (same temperature, top-k then top-p, from the model's
generation config); the draws are not the same as ``generate``'s (which draws with ``torch.multinomial``
over the whole batch), so the static backend is a switch (``sampling.backend``): ``auto`` uses it on CUDA
only, so CPU results stay exactly ``generate``'s. Greedy outputs equal ``generate``'s token for token
(tests/unit/test_sampler.py).

Stall: the first call at a new shape builds its graphs (capture: a few steps' time; inductor: a compile,
whose artifacts ``enable_compile_cache`` keeps on disk for the next process — none of it measured on a
GPU yet). Engines stay alive in this process keyed by the model's architecture, and a later model of
the same architecture (the next round's policy) has its weights copied into the engine's own copy, so
its graphs are reused as they are: no second stall. The price is memory held between calls: a copy of
the model and up to ``MAX_WORKSPACES`` caches per engine (``release_engines`` frees them).
``collect_stats`` reports the stall, prefill and decode seconds of every call.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

import torch
from transformers import DynamicCache, GenerationConfig, PreTrainedModel, StaticCache
from transformers.cache_utils import StaticLayer

from alignflow.components.config import SamplerCompile, SamplingBackend

logger = logging.getLogger("alignflow.sampler")

PROMPT_BUCKET = 32  # prompt blocks are padded on the left to a multiple of this
CACHE_BUCKET = 64  # cache lengths are rounded up to a multiple of this
CHECK_EVERY = 16  # decode steps between two looks at which rows are still running
MIN_ROWS = 8  # retirement never shrinks a batch below this many rows (graphs below it gain nothing)
MAX_WORKSPACES = 8  # (rows, cache length) shapes kept per engine, least recently used dropped
MAX_ENGINES = 2  # engines (model copies and their graphs) kept per process, least recently used dropped

# generation-config fields whose non-default values the static sampler does not implement
_UNSUPPORTED_DEFAULTS: dict[str, Any] = {
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0,
    "min_new_tokens": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "min_p": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
    "renormalize_logits": False, "num_beams": 1, "encoder_repetition_penalty": 1.0,
    "top_h": None, "watermarking_config": None,
}


# ---------------------------------------------------------------------------------------------------
# which backend


def static_support(model: torch.nn.Module) -> str | None:
    """Why the static sampler cannot run ``model`` (None: it can)."""
    if not isinstance(model, PreTrainedModel):
        return f"{type(model).__name__} is not a transformers PreTrainedModel (a PEFT wrapper: merge it first)"
    config = model.config
    if config.is_encoder_decoder:
        return "encoder-decoder models are not supported"
    attn = getattr(config, "_attn_implementation", None)
    if attn not in ("sdpa", "eager"):
        return f"attention implementation {attn!r} (the static sampler builds sdpa/eager masks)"
    try:
        layers = StaticCache(config=config, max_cache_len=8).layers
    except Exception as exc:  # noqa: BLE001 - any failure means: not this architecture
        return f"no StaticCache for this architecture ({exc})"
    odd = {type(layer).__name__ for layer in layers if type(layer) is not StaticLayer}
    if odd:
        return f"cache layers {sorted(odd)} (only full-attention layers are supported)"
    resolved = _resolved_generation_config(model)
    for name, default in _UNSUPPORTED_DEFAULTS.items():
        value = getattr(resolved, name, default)
        if value is not None and value != default:
            return f"generation config sets {name}={value!r}, which the static sampler does not implement"
    return None


def resolve_backend(model: torch.nn.Module, backend: SamplingBackend) -> Literal["hf", "static"]:
    """``auto``: static on CUDA when the model supports it, ``generate`` otherwise (always on CPU).

    Raises:
        ValueError: ``static`` was asked for and the model cannot use it (the reason is in the message).
    """
    if backend == "hf" or (backend == "auto" and not next(model.parameters()).is_cuda):
        return "hf"  # auto on CPU: generate, as before the sampler existed, without looking further
    reason = static_support(model)
    if backend == "static":
        if reason:
            raise ValueError(f"sampling.backend=static: {reason}")
        return "static"
    if reason:
        logger.info("sampling.backend=auto: Hugging Face generate, because %s", reason)
    return "hf" if reason else "static"


def resolve_compile(compile: SamplerCompile, device: torch.device) -> Literal["none", "cuda_graph", "inductor"]:
    if compile == "auto":
        return "cuda_graph" if device.type == "cuda" else "none"
    if compile == "cuda_graph" and device.type != "cuda":
        raise ValueError("sampling.compile=cuda_graph needs a CUDA device")
    return compile


# ---------------------------------------------------------------------------------------------------
# what is sampled


@dataclass(frozen=True)
class SamplingSpec:
    """How the next token is chosen; hashable, as it is baked into a captured graph."""

    do_sample: bool
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0
    want_logps: bool = False  # also return log π(token) at temperature 1 (the raw logits)
    has_stop_tokens: bool = False


def _resolved_generation_config(model: PreTrainedModel) -> GenerationConfig:
    """The model's generation config with ``generate``'s global defaults filled in where unset."""
    resolved = copy.deepcopy(model.generation_config)
    resolved.update(**GenerationConfig._get_default_generation_params(), defaults_only=True)
    return resolved


def sampling_spec(model: PreTrainedModel, do_sample: bool, temperature: float = 1.0, top_p: float | None = None,
                  top_k: int | None = None, want_logps: bool = False, has_stop_tokens: bool = False) -> SamplingSpec:
    """What ``generate`` would apply for these arguments: unset values come from the model's generation
    config, then from ``generate``'s defaults (top_k 50, top_p 1.0)."""
    if not do_sample:
        return SamplingSpec(False, want_logps=want_logps, has_stop_tokens=has_stop_tokens)
    resolved = _resolved_generation_config(model)
    k = resolved.top_k if top_k is None else top_k
    p = resolved.top_p if top_p is None else top_p
    return SamplingSpec(True, float(temperature), int(k or 0), float(1.0 if p is None else p), want_logps,
                        has_stop_tokens)


_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x · c) mod 2³² for int64 x in [0, 2³²), exactly and without int64 overflow on any backend."""
    return ((x & 0xFFFF) * c + ((((x >> 16) * c) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32, Chris Wellons) on int64 tensors holding 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform_per_row(row_keys: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """U(0, 1) float64 for each row at generated position t: a hash of (row key, t), 32 bits of it."""
    h = _mix32((row_keys + _mix32((t + 0x9E3779B9) & _M32)) & _M32)
    h = _mix32(h ^ 0x5BD1E995)
    return (h.to(torch.float64) + 0.5) * (1.0 / 4294967296.0)


def row_keys_from_generator(n_rows: int, device: torch.device) -> torch.Tensor:
    """One 32-bit key per row, drawn once from torch's default (CPU) generator: ``torch.manual_seed(s)``
    before a call fixes the call's samples. Row r's key depends only on the draw and r."""
    base = int(torch.randint(0, 2**31 - 1, (1,)).item())
    rows = torch.arange(n_rows, dtype=torch.int64, device=device)
    return _mix32((_mix32(torch.full_like(rows, base)) + rows * 0x632BE5AB) & _M32)


def choose_tokens(logits: torch.Tensor, row_keys: torch.Tensor, t: torch.Tensor, spec: SamplingSpec
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The next token of each row from its [R, V] logits, on the device; and, with ``spec.want_logps``,
    its log-probability under the raw logits (temperature 1, no filter)."""
    logps = None
    if spec.want_logps:
        logps_all = torch.log_softmax(logits.float(), dim=-1)
    if not spec.do_sample:
        tokens = logits.argmax(dim=-1)
    else:
        scores = logits.float()
        if spec.temperature != 1.0:
            scores = scores / spec.temperature
        vocab = scores.shape[-1]
        ids: torch.Tensor | None = None
        if 0 < spec.top_k < vocab:
            scores, ids = torch.topk(scores, spec.top_k, dim=-1)  # sorted, largest first
        if spec.top_p < 1.0:
            if ids is None:
                scores, ids = torch.sort(scores, dim=-1, descending=True)
            probs = torch.softmax(scores, dim=-1)
            # generate's top-p: drop the tokens whose cumulative probability, counted from the least
            # likely up, is at most 1 − top_p; the most likely token always stays
            tail = probs.flip(-1).cumsum(-1).flip(-1)
            drop = tail <= 1.0 - spec.top_p
            drop[:, 0] = False
            scores = scores.masked_fill(drop, float("-inf"))
        # inverse transform: the first candidate whose cumulative probability passes the row's uniform
        # (one hash per row, where Gumbel-max would need one per candidate: the whole vocabulary without top-k)
        cdf = torch.softmax(scores, dim=-1, dtype=torch.float64).cumsum(dim=-1)
        u = uniform_per_row(row_keys, t) * cdf[:, -1]  # < the total, so never past the last candidate
        choice = torch.searchsorted(cdf, u.unsqueeze(-1), right=True).clamp(max=scores.shape[-1] - 1)
        tokens = (ids.gather(-1, choice) if ids is not None else choice).squeeze(-1)
    if spec.want_logps:
        logps = logps_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return tokens, logps


# ---------------------------------------------------------------------------------------------------
# statistics


@dataclass
class SamplerStats:
    calls: int = 0
    stall_s: float = 0.0  # building graphs: warm-up, capture, compilation (0 when every graph existed)
    prefill_s: float = 0.0
    decode_s: float = 0.0
    new_tokens: int = 0  # generated positions of real rows, padding after a row finished excluded
    graphs_built: int = 0
    retirements: int = 0  # times running rows were moved into a smaller graph

    def add(self, other: SamplerStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


_COLLECTORS: ContextVar[tuple[SamplerStats, ...]] = ContextVar("alignflow_sampler_stats", default=())


@contextlib.contextmanager
def collect_stats() -> Iterator[SamplerStats]:
    """Sum the ``SamplerStats`` of every static-sampler call made inside the block (nested blocks each
    see their own calls)."""
    stats = SamplerStats()
    token = _COLLECTORS.set((*_COLLECTORS.get(), stats))
    try:
        yield stats
    finally:
        _COLLECTORS.reset(token)


def _report(stats: SamplerStats) -> None:
    for collector in _COLLECTORS.get():
        collector.add(stats)


# ---------------------------------------------------------------------------------------------------
# compiled artifacts on disk


def compile_cache_dir() -> Path:
    """``ALIGNFLOW_COMPILE_CACHE`` or ``~/.cache/alignflow/compile``, one folder per torch version."""
    root = Path(os.environ.get("ALIGNFLOW_COMPILE_CACHE", "~/.cache/alignflow/compile")).expanduser()
    return root / f"torch-{torch.__version__}"


def enable_compile_cache() -> Path:
    """Point inductor's (and triton's) caches at ``compile_cache_dir()`` unless the environment already
    chose a place, and make sure the FX-graph and AOT-autograd caches are on: a later process compiling
    the same graphs (same model shape, dtype, bucketed sizes) loads them instead of compiling."""
    directory = compile_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(directory / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(directory / "triton"))
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return directory


def _artifact_file(key: str) -> Path:
    return compile_cache_dir() / "mega" / f"{key}.bin"


def load_compile_artifacts(key: str) -> bool:
    """Hot-load what ``save_compile_artifacts(key)`` saved (all of inductor's caches in one file, so a pod
    with a fresh local cache directory still finds them on a shared volume). True if something loaded."""
    path = _artifact_file(key)
    if not path.exists():
        return False
    try:
        return torch.compiler.load_cache_artifacts(path.read_bytes()) is not None
    except Exception as exc:  # noqa: BLE001 - a stale or foreign file only costs a compile
        logger.warning("compile artifacts %s not loaded (%s); compiling", path, exc)
        return False


def save_compile_artifacts(key: str) -> Path | None:
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        return None
    path = _artifact_file(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(saved[0])
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------------
# the engine


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def architecture_key(model: PreTrainedModel) -> str:
    """What the graphs depend on: the class, the architecture fields of its config (not its name or
    path), dtype and device. Two rounds' policies of one base share a key."""
    config = model.config.to_dict()
    kept = {k: v for k, v in config.items() if not k.startswith("_") and k not in
            ("name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype", "use_cache")}
    param = next(model.parameters())
    blob = json.dumps([type(model).__qualname__, kept, str(param.dtype), str(param.device)], sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class _View:
    """The first ``rows`` rows of a workspace: what one graph runs on."""

    rows: int
    cache: StaticCache
    tokens: torch.Tensor  # [rows] the token each row feeds next
    pad: torch.Tensor  # [rows] left padding of each row's prompt inside the prompt block
    finished: torch.Tensor  # [rows] bool
    row_keys: torch.Tensor  # [rows] int64 RNG keys
    row_ids: torch.Tensor  # [rows] the row's index in the call's output
    graphs: dict[SamplingSpec, Callable[[], None]] = field(default_factory=dict)


class _Workspace:
    """Static buffers for up to ``rows`` rows and ``cache_len`` positions, and the prefix views."""

    def __init__(self, model: PreTrainedModel, rows: int, cache_len: int) -> None:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
        self.rows, self.cache_len, self.device = rows, cache_len, device
        self.cache = StaticCache(config=model.config, max_cache_len=cache_len)
        text = model.config.get_text_config(decoder=True)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.cache.early_initialization(rows, text.num_key_value_heads, head_dim, dtype, device)
        self.tokens = torch.zeros(rows, dtype=torch.long, device=device)
        self.pad = torch.zeros(rows, dtype=torch.long, device=device)
        self.finished = torch.ones(rows, dtype=torch.bool, device=device)
        self.row_keys = torch.zeros(rows, dtype=torch.long, device=device)
        self.row_ids = torch.arange(rows, dtype=torch.long, device=device)
        self.prompt_end = torch.zeros((), dtype=torch.long, device=device)  # the prompt block's width
        self.positions = torch.arange(cache_len, dtype=torch.long, device=device)
        self.out = torch.zeros((rows, cache_len), dtype=torch.long, device=device)
        self.out_logps = torch.zeros((rows, cache_len), dtype=torch.float32, device=device)
        vocab = cast(Any, model.get_output_embeddings()).weight.shape[0]
        self.stop = torch.zeros(vocab, dtype=torch.bool, device=device)  # tokens that end a row besides EOS
        self.eos = torch.zeros((), dtype=torch.long, device=device)
        self.pad_id = torch.zeros((), dtype=torch.long, device=device)
        self.layers: list[Any] = list(self.cache.layers)  # StaticLayers (static_support checked)
        self.views: dict[int, _View] = {}

    def view(self, rows: int) -> _View:
        if rows not in self.views:
            cache = self.cache
            if rows != self.rows:
                cache = copy.copy(self.cache)  # a shallow copy, its layers replaced by prefix views
                cast(Any, cache).layers = [_prefix_layer(layer, rows) for layer in self.layers]
            self.views[rows] = _View(rows, cache, self.tokens[:rows], self.pad[:rows], self.finished[:rows],
                                     self.row_keys[:rows], self.row_ids[:rows])
        return self.views[rows]

    def view_sizes(self) -> list[int]:
        """The row counts retirement can shrink to: rows, rows/2, … down to MIN_ROWS."""
        sizes = [self.rows]
        while sizes[-1] // 2 >= MIN_ROWS and sizes[-1] % 2 == 0:
            sizes.append(sizes[-1] // 2)
        return sizes


def _prefix_layer(layer: Any, rows: int) -> Any:
    """A StaticLayer over the first ``rows`` rows of ``layer``'s buffers, sharing its position counter."""
    view = copy.copy(layer)
    view.keys, view.values = layer.keys[:rows], layer.values[:rows]
    view.batch_size = rows
    return view


@dataclass
class SampleOutput:
    tokens: torch.Tensor  # [rows, T] new tokens, padding after a row's last token
    logps: torch.Tensor | None  # [rows, T] log π(token) at temperature 1, when asked
    lengths: list[int]  # generated tokens per row, its stop token (EOS or a stop token) included
    cache: DynamicCache | None  # keep_cache: prompt block + generated tokens but the last, in row order
    prompt_width: int  # the cache's prompt block (prompts left-padded to it)
    stats: SamplerStats


class StaticSampler:
    """One model architecture's sampler: a private copy of the model, its workspaces and graphs."""

    def __init__(self, model: PreTrainedModel, compile: Literal["none", "cuda_graph", "inductor"]) -> None:
        reason = static_support(model)
        if reason:
            raise ValueError(reason)
        self.key = architecture_key(model)
        self.compile = compile
        with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, whatever mode the caller is in
            self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.device = next(self.model.parameters()).device
        self._names = [n for n, _ in self._tensors(self.model)]
        self._synced: tuple[int, ...] | None = None
        self._synced_model: weakref.ref[PreTrainedModel] | None = None
        self.workspaces: OrderedDict[tuple[int, int], _Workspace] = OrderedDict()
        self._mask_dtype = torch.bool if self.model.config._attn_implementation == "sdpa" else None
        self._compiled_step: Callable[..., None] | None = None
        if compile == "inductor":
            enable_compile_cache()
            load_compile_artifacts(self.key)

    @staticmethod
    def _tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
        return [*model.named_parameters(), *model.named_buffers()]

    def sync_weights(self, model: PreTrainedModel) -> bool:
        """Copy ``model``'s weights into the engine's copy, unless they are the ones copied last time
        (same object, no tensor modified in place since: version counters). True if copied."""
        tensors = self._tensors(model)
        try:
            versions: tuple[int, ...] | None = tuple(t._version for _, t in tensors)
        except RuntimeError:  # inference tensors keep no version counter: copy every time
            versions = None
        if versions is not None and self._synced == versions and self._synced_model is not None \
                and self._synced_model() is model:
            return False
        if [n for n, _ in tensors] != self._names:
            raise ValueError("the model's parameters differ from the engine's: not the same architecture")
        with torch.no_grad():
            for (_, dst), (_, src) in zip(self._tensors(self.model), tensors, strict=True):
                dst.copy_(src)
        self._synced, self._synced_model = versions, weakref.ref(model)
        return True

    # -- building blocks ------------------------------------------------------------------------

    def _workspace(self, rows: int, cache_len: int) -> _Workspace:
        key = (rows, cache_len)
        if key not in self.workspaces:
            self.workspaces[key] = _Workspace(self.model, rows, cache_len)
            while len(self.workspaces) > MAX_WORKSPACES:  # their caches and graphs go with them
                self.workspaces.popitem(last=False)
        self.workspaces.move_to_end(key)
        return self.workspaces[key]

    def _step(self, ws: _Workspace, v: _View, spec: SamplingSpec) -> None:
        """One decode step on view ``v``: feed each row's token, choose the next, record it. Only device
        tensors in, nothing read back: captured in a CUDA graph as it is."""
        slot = ws.layers[0].cumulative_length  # where this step's token goes (views share the counters)
        t = slot - ws.prompt_end + 1  # the index of the token chosen now among the generated ones
        keys = ws.positions.unsqueeze(0)
        valid = (keys >= v.pad.unsqueeze(1)) & (keys <= slot)  # the row's prompt and everything since
        mask = valid[:, None, None, :]
        if self._mask_dtype is None:  # eager attention adds the mask
            dtype = next(self.model.parameters()).dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        logits = self.model(input_ids=v.tokens.unsqueeze(1), position_ids=(slot - v.pad).unsqueeze(1),
                            attention_mask=mask, past_key_values=v.cache, use_cache=True).logits[:, -1, :]
        tokens, logps = choose_tokens(logits, v.row_keys, t, spec)
        running = ~v.finished
        tokens = torch.where(running, tokens, ws.pad_id)
        v.tokens.copy_(tokens)
        column = t.expand(v.rows)
        ws.out.index_put_((v.row_ids, column), tokens)
        if logps is not None:
            ws.out_logps.index_put_((v.row_ids, column), torch.where(running, logps, 0.0))
        stopped = self._stops(tokens, ws, spec)
        v.finished.copy_(v.finished | (running & stopped))

    def _stops(self, tokens: torch.Tensor, ws: _Workspace, spec: SamplingSpec) -> torch.Tensor:
        stopped = tokens == ws.eos
        if spec.has_stop_tokens:
            stopped = stopped | ws.stop[tokens]
        return stopped

    def _runner(self, ws: _Workspace, v: _View, spec: SamplingSpec) -> Callable[[], None]:
        """The step of view ``v`` as something to call: eager, compiled, or a CUDA graph's replay. Built
        before a call's prefill only: building runs steps on whatever the buffers hold."""
        if spec in v.graphs:
            return v.graphs[spec]
        start = time.perf_counter()
        for layer in ws.layers:  # warm-up steps write at the counter: keep them inside the cache
            layer.cumulative_length.zero_()

        def eager() -> None:
            self._step(ws, v, spec)

        run: Callable[[], None] = eager
        if self.compile == "inductor":
            if self._compiled_step is None:
                self._compiled_step = cast(Callable[..., None], torch.compile(self._step, dynamic=False))
            compiled = self._compiled_step

            def run_compiled() -> None:
                compiled(ws, v, spec)

            run = run_compiled
        if self.device.type == "cuda" and self.compile in ("cuda_graph", "inductor"):
            try:
                run = self._capture(run)
            except Exception as exc:  # noqa: BLE001 - a step that cannot be captured still runs, slower
                logger.warning("the decode step could not be captured in a CUDA graph (%s); running it uncaptured",
                               exc)
        elif self.compile == "inductor":
            run()  # compile now, so the stall is counted here and not in the first decode step
        v.graphs[spec] = run
        self._built_s += time.perf_counter() - start
        self._built += 1
        return run

    def _capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Warm ``fn`` up on a side stream (it runs on whatever state is in the buffers: the call that
        follows overwrites it), then capture one step in a CUDA graph."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool()):
            fn()
        return graph.replay

    def _pool(self) -> Any:
        if not hasattr(self, "_graph_pool"):
            self._graph_pool = torch.cuda.graph_pool_handle()
        return self._graph_pool

    # -- one call -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, k: int, spec: SamplingSpec,
                 max_new_tokens: int, eos_token_id: int, pad_token_id: int, stop_token_mask: torch.Tensor | None = None,
                 keep_cache: bool = False, retire: bool = True) -> SampleOutput:
        """``k`` continuations of each left-padded prompt, rows ordered (prompt, sample) as ``generate``'s
        ``num_return_sequences``. ``stop_token_mask`` ([V] bool): tokens that end a row like EOS.
        ``keep_cache``: also return a DynamicCache of every row's prompt block and its generated tokens
        but the last (what ``generate`` leaves), for a continuation; retirement is then off."""
        if spec.has_stop_tokens != (stop_token_mask is not None):
            raise ValueError("spec.has_stop_tokens must match whether a stop_token_mask is given")
        self._built, self._built_s = 0, 0.0
        stats = SamplerStats(calls=1)
        n_prompts, width = input_ids.shape
        n_rows = n_prompts * k
        rows = _next_pow2(n_rows)
        prompt_width = _round_up(width, PROMPT_BUCKET)
        cache_len = _round_up(prompt_width + max_new_tokens, CACHE_BUCKET)
        ws = self._workspace(rows, cache_len)
        retire = retire and not keep_cache
        for size in (ws.view_sizes() if retire else [rows]):  # every graph this call may need, built first
            self._runner(ws, ws.view(size), spec)
        if self._built and self.compile == "inductor":
            save_compile_artifacts(self.key)  # for a process that finds the local cache directory empty
        ws.eos.fill_(eos_token_id)
        ws.pad_id.fill_(pad_token_id)
        if stop_token_mask is not None:
            ws.stop.copy_(stop_token_mask.to(self.device))
        stats.stall_s, stats.graphs_built = self._built_s, self._built
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        start = time.perf_counter()
        ids, mask = input_ids.to(self.device), attention_mask.to(self.device)
        first_logits = self._prefill(ws, ids, mask, k, prompt_width, n_rows)
        ws.row_keys.copy_(row_keys_from_generator(rows, self.device))
        ws.row_ids.copy_(torch.arange(rows, device=self.device))
        ws.out.fill_(pad_token_id)
        ws.out_logps.zero_()
        zero = torch.zeros((), dtype=torch.long, device=self.device)
        first, first_logps = choose_tokens(first_logits, ws.row_keys[:n_rows], zero, spec)
        ws.tokens.fill_(pad_token_id)
        ws.tokens[:n_rows] = first
        ws.out[:n_rows, 0] = first
        if first_logps is not None:
            ws.out_logps[:n_rows, 0] = first_logps
        ws.finished.fill_(True)
        ws.finished[:n_rows] = self._stops(first, ws, spec)
        sync()
        stats.prefill_s = time.perf_counter() - start

        start = time.perf_counter()
        view = ws.view(rows)
        steps = 1  # generated columns so far
        while steps < max_new_tokens:
            self._runner(ws, view, spec)()
            steps += 1
            if steps % CHECK_EVERY == 0 or steps == max_new_tokens:
                running = int((~view.finished).sum())  # the one read-back, every CHECK_EVERY steps
                if running == 0:
                    break
                if retire and running <= view.rows // 2 and view.rows // 2 in ws.views:
                    view = self._retire(ws, view, running)
                    stats.retirements += 1
        sync()
        stats.decode_s = time.perf_counter() - start
        tokens = ws.out[:n_rows, :steps].clone()
        logps = ws.out_logps[:n_rows, :steps].clone() if spec.want_logps else None
        stops = tokens == eos_token_id
        if stop_token_mask is not None:
            stops |= ws.stop[tokens]
        ended = stops.any(dim=1)
        lengths = torch.where(ended, stops.int().argmax(dim=1) + 1, steps).tolist()
        stats.new_tokens = int(sum(lengths))
        cache = self._dynamic_cache(ws, n_rows, prompt_width + steps - 1) if keep_cache else None
        _report(stats)
        return SampleOutput(tokens, logps, lengths, cache, prompt_width, stats)

    def _prefill(self, ws: _Workspace, ids: torch.Tensor, mask: torch.Tensor, k: int, prompt_width: int,
                 n_rows: int) -> torch.Tensor:
        """Encode each prompt once (exactly as ``generate``'s first forward does) and copy its keys and
        values k times into the static cache, right-aligned in the prompt block. Returns the logits of
        every row's first token, [n_rows, V]."""
        width = ids.shape[1]
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                            use_cache=True, logits_to_keep=1).logits[:, -1, :]
        for static, dynamic in zip(ws.layers, cast(Any, cache).layers, strict=True):
            static.keys[:n_rows, :, prompt_width - width:prompt_width] = dynamic.keys.repeat_interleave(k, 0)
            static.values[:n_rows, :, prompt_width - width:prompt_width] = dynamic.values.repeat_interleave(k, 0)
            static.cumulative_length.fill_(prompt_width)
        ws.prompt_end.fill_(prompt_width)
        ws.pad.fill_(prompt_width)  # rows past n_rows: no prompt, they attend to their own tokens only
        ws.pad[:n_rows] = (prompt_width - mask.sum(-1)).repeat_interleave(k, 0)
        return logits.repeat_interleave(k, 0)

    def _retire(self, ws: _Workspace, view: _View, running: int) -> _View:
        """Move the running rows of ``view`` to the front and continue on the smallest view holding them."""
        size = view.rows
        while size // 2 >= running and size // 2 in ws.views:
            size //= 2
        order = torch.argsort(view.finished.to(torch.int8), stable=True)[:size]  # running rows first
        for layer in ws.layers:
            layer.keys[:size] = layer.keys[:view.rows].index_select(0, order)
            layer.values[:size] = layer.values[:view.rows].index_select(0, order)
        for buffer in (ws.tokens, ws.pad, ws.finished, ws.row_keys, ws.row_ids):
            buffer[:size] = buffer[:view.rows].index_select(0, order)
        return ws.views[size]

    def _dynamic_cache(self, ws: _Workspace, n_rows: int, length: int) -> DynamicCache:
        cache = DynamicCache(config=self.model.config)
        for index, layer in enumerate(ws.layers):
            cache.update(layer.keys[:n_rows, :, :length].clone(), layer.values[:n_rows, :, :length].clone(), index)
        return cache


_ENGINES: OrderedDict[tuple[str, str], StaticSampler] = OrderedDict()


def engine_for(model: PreTrainedModel, compile: SamplerCompile = "auto") -> StaticSampler:
    """This process's engine for ``model``'s architecture (made on first use), its weights synced."""
    mode = resolve_compile(compile, next(model.parameters()).device)
    key = (architecture_key(model), mode)
    if key not in _ENGINES:
        _ENGINES[key] = StaticSampler(model, mode)
        while len(_ENGINES) > MAX_ENGINES:
            _ENGINES.popitem(last=False)
    _ENGINES.move_to_end(key)
    engine = _ENGINES[key]
    engine.sync_weights(model)
    return engine


def release_engines() -> None:
    """Drop every engine (their model copies, caches and graphs)."""
    _ENGINES.clear()


class StaticGenerate:
    """``model.generate``'s calling convention for what ``generate_completions`` asks of it, on the static
    sampler: returns [B·k, prompt width + T] like ``generate`` (prompt, then new tokens padded after EOS)."""

    def __init__(self, model: PreTrainedModel, compile: SamplerCompile = "auto") -> None:
        self.model = model
        self.compile: SamplerCompile = compile

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                 num_return_sequences: int = 1, pad_token_id: int, eos_token_id: int, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float | None = None, top_k: int | None = None,
                 **extra: Any) -> torch.Tensor:
        unused = sorted(name for name, value in extra.items() if value is not None)
        if unused:
            raise ValueError(f"the static sampler does not take {unused}")
        engine = engine_for(self.model, self.compile)
        spec = sampling_spec(self.model, do_sample, temperature, top_p, top_k)
        out = engine.generate(input_ids, attention_mask, k=num_return_sequences, spec=spec,
                              max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        prompts = input_ids.to(out.tokens.device).repeat_interleave(num_return_sequences, 0)
        return torch.cat([prompts, out.tokens], dim=1)


def generator_for(model: PreTrainedModel, backend: SamplingBackend = "auto", compile: SamplerCompile = "auto"
                  ) -> Any:
    """What ``generate_completions`` calls ``.generate`` on: the model itself (Hugging Face) or the
    static sampler, as ``backend`` resolves for this model and device."""
    return StaticGenerate(model, compile) if resolve_backend(model, backend) == "static" else model
