"""What MCTS asks of the policy: k candidate next steps per state, and a self-evaluation.

Speed is the point of this module. The published code generates one child at a time and
re-encodes the whole prefix for every child and every self-evaluation. Here:

- all states of a search batch (several trees, one leaf each) are expanded in one ``generate``
  call; each state's prefix is encoded **once** and its KV cache repeated for its k children
  (on CUDA, by default, the static-cache sampler of ``components/modeling/sampler.py`` does it, its
  rows stopping at a token that holds the step separator; ``backend`` picks);
- a step's log-prob for the PUCT prior comes from the sampling pass's own logits, not from a
  second forward;
- the self-evaluation continues each child's own sequence (``self_eval_layout: continuation``):
  the policy's answer so far is closed as an assistant turn and a user turn asks whether it heads
  the right way, so only that question is encoded, on top of the generation's KV cache — the
  question, the prompt and the partial solution are not re-encoded for every child. All
  children's self-evaluations run as one batched forward that keeps only the last position's
  logits. (``fresh`` builds the published prompt — question, reference, partial solution — from
  scratch for every child.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from alignflow.components.config import SamplerCompile, SamplingBackend
from alignflow.components.modeling.generation import CanGenerate
from alignflow.components.modeling.logprobs import position_ids_for
from alignflow.components.modeling.sampler import SamplingSpec, engine_for, resolve_backend
from alignflow.components.trainers.common import model_device


@dataclass
class Candidate:
    text: str  # the step, without its trailing newline
    logp: float  # log π(step | state) at temperature 1, EOS included when it ended the step
    n_tokens: int
    ended: bool  # the policy emitted EOS: the solution is over
    token_ids: list[int]  # the sampled tokens the log-prob covers (EOS included when it ended the step)
    answer_probs: list[float] | None = None  # self-evaluation: p(each answer) after this step, when asked


@dataclass
class SelfEvalRequest:
    """Continue each sampled step with ``suffixes[context]`` and read p(answer) for ``answers``.
    ``suffixes`` come from ``continuation_suffix``: (after a step, after an EOS-ended step)."""
    suffixes: list[tuple[str, str]]
    answers: list[str]


def cut_step(tokens: list[int], logps: list[float], eos_id: int, decode, separator: str = "\n") -> Candidate:
    """A step is everything up to and including the token that completes the first ``separator``,
    or up to EOS. The decoded prefix is checked, not each token, so a separator spread over
    several tokens (e.g. a blank line) is found too."""
    kept: list[int] = []
    total = 0.0
    for token, logp in zip(tokens, logps, strict=True):
        total += logp
        if token == eos_id:
            return Candidate(decode(kept).strip(), total, len(kept) + 1, True, kept + [token])
        kept.append(token)
        if separator in decode(kept):
            break
    return Candidate(decode(kept).split(separator, 1)[0].strip(), total, len(kept), False, kept)


class StepPolicy:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int = 32,
                 temperature: float = 1.0, reuse_prefix_cache: bool = True, separator: str = "\n",
                 backend: SamplingBackend = "auto", compile: SamplerCompile = "auto") -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.reuse_prefix_cache = reuse_prefix_cache
        self.separator = separator  # what ends a step (generation stops there)
        self.backend: SamplingBackend = backend  # who generates: components/modeling/sampler.py
        self.compile: SamplerCompile = compile
        self.expanded_tokens = 0  # tokens encoded (prefixes and self-evaluations), for throughput accounting
        self._stop_tokens: torch.Tensor | None = None

    def _decode(self, tokens: list[int]) -> str:
        return cast(str, self.tokenizer.decode(tokens, skip_special_tokens=True))

    @torch.inference_mode()
    def sample_steps(self, contexts: list[str], k: int, seed: int,
                     self_eval: SelfEvalRequest | None = None) -> list[list[Candidate]]:
        """k candidate next steps for each context (prompt + steps so far), in one generate call;
        with ``self_eval``, every candidate also gets its ``answer_probs`` (one more forward)."""
        tok = self.tokenizer
        tok.padding_side = "left"
        enc = tok(contexts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = model_device(self.model)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        if resolve_backend(self.model, self.backend) == "static":
            new_tokens, token_logps, cache, ids, mask = self._generate_static(ids, mask, k, seed, self_eval is not None)
        else:
            new_tokens, token_logps, cache = self._generate_hf(ids, mask, k, seed)
            ids, mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
        results: list[list[Candidate]] = []
        for row, (tokens, logps) in enumerate(zip(new_tokens.tolist(), token_logps.tolist(), strict=True)):
            if row % k == 0:
                results.append([])
            results[-1].append(cut_step(tokens, logps, cast(int, tok.eos_token_id), self._decode, self.separator))
        if self_eval is not None:
            flat = [c for row in results for c in row]
            probs = self._continue_and_read(ids, mask, cache, new_tokens.shape[1], flat,
                                            [sfx for sfx in self_eval.suffixes for _ in range(k)], self_eval.answers)
            for c, p in zip(flat, probs, strict=True):
                c.answer_probs = p
        return results

    def _generate_hf(self, ids: torch.Tensor, mask: torch.Tensor, k: int, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor, DynamicCache | None]:
        """Hugging Face ``generate``: (new tokens, their log-probs at temperature 1, the cache when it
        reused the prefixes)."""
        tok = self.tokenizer
        extra = {}
        if self.reuse_prefix_cache and ids.shape[1] > 1:
            # encode each prefix once (all but its last token: generate feeds that one), then give
            # every child its own copy of the prefix's keys and values
            cache = DynamicCache(config=self.model.config)
            self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                       position_ids=position_ids_for(mask)[:, :-1], past_key_values=cache, use_cache=True)
            cache.batch_repeat_interleave(k)
            extra["past_key_values"] = cache
            self.expanded_tokens += int(mask.sum())
        else:
            self.expanded_tokens += int(mask.sum()) * k
        torch.manual_seed(seed)
        out = cast(CanGenerate, self.model).generate(
            input_ids=ids.repeat_interleave(k, 0), attention_mask=mask.repeat_interleave(k, 0),
            do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0, max_new_tokens=self.max_new_tokens,
            stop_strings=[self.separator], tokenizer=tok, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            output_logits=True, return_dict_in_generate=True, **extra)
        new_tokens = out.sequences[:, ids.shape[1]:]
        # log π at temperature 1 from the raw logits of the sampling pass: no second forward
        logits = torch.stack(out.logits, dim=1).float()  # [B·k, T, V]
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        return new_tokens, token_logps, out.past_key_values if self.reuse_prefix_cache else None

    def _generate_static(self, ids: torch.Tensor, mask: torch.Tensor, k: int, seed: int, keep_cache: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, DynamicCache | None, torch.Tensor, torch.Tensor]:
        """The static sampler: every prefix encoded once, rows stopped by a token holding the separator
        (``cut_step`` still cuts at the separator itself), log-probs from the sampling pass. Also returns
        the k-fold prompts left-padded to the cache's prompt block, as the cache holds them."""
        tok = self.tokenizer
        engine = engine_for(self.model, self.compile)
        torch.manual_seed(seed)
        spec = SamplingSpec(True, self.temperature, 0, 1.0, want_logps=True, has_stop_tokens=True)
        out = engine.generate(ids, mask, k=k, spec=spec, max_new_tokens=self.max_new_tokens,
                              eos_token_id=cast(int, tok.eos_token_id), pad_token_id=cast(int, tok.pad_token_id),
                              stop_token_mask=self._separator_tokens(),
                              keep_cache=keep_cache and self.reuse_prefix_cache)
        self.expanded_tokens += int(mask.sum())
        assert out.logps is not None  # asked for by the spec
        extra = out.prompt_width - ids.shape[1]
        ids = torch.nn.functional.pad(ids, (extra, 0), value=cast(int, tok.pad_token_id)).repeat_interleave(k, 0)
        mask = torch.nn.functional.pad(mask, (extra, 0), value=0).repeat_interleave(k, 0)
        return out.tokens, out.logps, out.cache, ids, mask

    def _separator_tokens(self) -> torch.Tensor:
        """[V] bool: the tokens whose text contains the step separator."""
        if self._stop_tokens is None:
            vocab = cast(Any, self.model.get_output_embeddings()).weight.shape[0]
            self._stop_tokens = separator_tokens(self.tokenizer, self.separator, vocab)
        return self._stop_tokens

    def _continue_and_read(self, ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache | None,
                           n_generated: int, candidates: list[Candidate], suffixes: list[tuple[str, str]],
                           answers: list[str]) -> list[list[float]]:
        """p(answer) after prompt + step + suffix, for each row of a finished ``generate``.

        With the generation's cache, only the suffix (and a step's last token, which generate
        never fed back) is encoded: the suffix block goes after all cached positions, left-padded
        so every row's last token is the last column; the attention mask hides the prompt's left
        padding and whatever a row generated after its step ended. Without a cache, every row is
        re-encoded from its first token (the reference the cached path must equal)."""
        tok = self.tokenizer
        targets = [tok(answer, add_special_tokens=False)["input_ids"][0] for answer in answers]
        suffix_ids = {text: tok(text, add_special_tokens=False)["input_ids"]
                      for pair in suffixes for text in pair}
        device = ids.device
        rows = [suffix_ids[sfx[1] if c.ended else sfx[0]] for c, sfx in zip(candidates, suffixes, strict=True)]
        if cache is None:
            full = [ids[r][mask[r] > 0].tolist() + c.token_ids + rows[r] for r, c in enumerate(candidates)]
            width = max(map(len, full))
            x = torch.full((len(full), width), cast(int, tok.pad_token_id), dtype=torch.long, device=device)
            m = torch.zeros_like(x)
            for r, row in enumerate(full):
                x[r, width - len(row):] = torch.tensor(row, device=device)
                m[r, width - len(row):] = 1
            self.expanded_tokens += int(m.sum())
            logits = self.model(input_ids=x, attention_mask=m, position_ids=position_ids_for(m),
                                logits_to_keep=1).logits[:, -1, :].float()
            return torch.softmax(logits, dim=-1)[:, targets].tolist()
        cached_generated = cache.get_seq_length() - ids.shape[1]  # generate never feeds its last token
        assert cached_generated == n_generated - 1, (cache.get_seq_length(), ids.shape, n_generated)
        covered = [min(len(c.token_ids), cached_generated) for c in candidates]
        blocks = [c.token_ids[n:] + row for c, n, row in zip(candidates, covered, rows, strict=True)]
        width = max(map(len, blocks))
        x = torch.full((len(blocks), width), cast(int, tok.pad_token_id), dtype=torch.long, device=device)
        block_mask = torch.zeros_like(x)
        positions = torch.zeros_like(x)
        generated_mask = torch.zeros((len(blocks), cached_generated), dtype=mask.dtype, device=device)
        prompt_lengths = mask.sum(-1).tolist()
        for r, block in enumerate(blocks):
            x[r, width - len(block):] = torch.tensor(block, device=device)
            block_mask[r, width - len(block):] = 1
            start = prompt_lengths[r] + covered[r]
            positions[r, width - len(block):] = torch.arange(start, start + len(block), device=device)
            generated_mask[r, :covered[r]] = 1
        self.expanded_tokens += int(block_mask.sum())
        attention_mask = torch.cat([mask, generated_mask, block_mask], dim=1)
        logits = self.model(input_ids=x, attention_mask=attention_mask, position_ids=positions,
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()
        return torch.softmax(logits, dim=-1)[:, targets].tolist()

    @torch.inference_mode()
    def probabilities_of(self, prompts: list[str], answers: list[str], batch_size: int = 32) -> list[list[float]]:
        """p(answer's first token | prompt) for each prompt and each answer, as [prompt][answer]:
        one forward per batch, last position only, every answer read from the same logits."""
        tok = self.tokenizer
        tok.padding_side = "left"
        targets = [tok(answer, add_special_tokens=False)["input_ids"][0] for answer in answers]
        device = model_device(self.model)
        out: list[list[float]] = []
        for start in range(0, len(prompts), batch_size):
            enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            self.expanded_tokens += int(mask.sum())
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids_for(mask),
                                logits_to_keep=1).logits[:, -1, :].float()
            out += torch.softmax(logits, dim=-1)[:, targets].tolist()
        return out


SELF_EVAL_QUESTION = ("Is the partial solution above heading the correct way to the answer? "
                      "(A) incorrect (B) correct")


def self_eval_prompt(tokenizer: PreTrainedTokenizerBase, question: str, reference_solution: str | None,
                     steps: list[str], separator: str = "\n") -> str:
    """The policy judges its own partial solution; the option letter follows the open parenthesis."""
    reference = f"Reference solution:\n{reference_solution}\n\n" if reference_solution else ""
    partial = separator.join(steps) if steps else "(no steps yet)"
    content = f"Question:\n{question}\n\n{reference}Partial solution:\n{partial}\n\n{SELF_EVAL_QUESTION}"
    rendered = cast(str, tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                       add_generation_prompt=True))
    return rendered + "The answer is ("


def continuation_suffix(tokenizer: PreTrainedTokenizerBase, reference_solution: str | None) -> tuple[str, str]:
    """What follows the policy's own partial answer to ask it about that answer: the assistant
    turn is closed and a user turn (reference solution, then the question) opened, exactly as the
    chat template renders a third turn. Two forms: after a step that ended with a newline (the
    turn still open), and after a step that ended with EOS (the turn already closed by it)."""
    probe = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "S"}]
    reference = f"Reference solution:\n{reference_solution}\n\n" if reference_solution else ""
    content = f"{reference}{SELF_EVAL_QUESTION.replace('above', 'in your answer above')}"
    closed = cast(str, tokenizer.apply_chat_template(probe, tokenize=False))
    asked = cast(str, tokenizer.apply_chat_template(probe + [{"role": "user", "content": content}], tokenize=False,
                                                    add_generation_prompt=True))
    if not asked.startswith(closed) or closed.rfind("S") < 0:
        raise ValueError("the chat template does not render a third turn as a continuation of the first two; "
                         "use mcts.self_eval_layout=fresh")
    turn_close = closed[closed.rfind("S") + 1:]  # e.g. "<|im_end|>\n"
    question = asked[len(closed):] + "The answer is ("
    eos = cast(str, tokenizer.eos_token)
    after_eos = turn_close[len(eos):] if turn_close.startswith(eos) else turn_close
    return turn_close + question, after_eos + question


_SEPARATOR_TOKENS: dict[tuple[str, int, str, int], torch.Tensor] = {}


def separator_tokens(tokenizer: PreTrainedTokenizerBase, separator: str, vocab: int) -> torch.Tensor:
    """[vocab] bool, True where the token's text contains ``separator`` (decoding the vocabulary once
    per tokenizer and separator in a process)."""
    key = (str(tokenizer.name_or_path), len(tokenizer), separator, vocab)
    if key not in _SEPARATOR_TOKENS:
        texts = tokenizer.batch_decode([[i] for i in range(min(vocab, len(tokenizer)))])
        stop = torch.zeros(vocab, dtype=torch.bool)
        stop[[i for i, text in enumerate(texts) if separator in text]] = True
        _SEPARATOR_TOKENS[key] = stop
    return _SEPARATOR_TOKENS[key]
