"""What MCTS asks of the policy: k candidate next steps per state, and a self-evaluation.

Speed is the point of this module. The published code generates one child at a time and
re-encodes the whole prefix for every child and every self-evaluation. Here:

- all states of a search batch (several trees, one leaf each) are expanded in one ``generate``
  call; each state's prefix is encoded **once** and its KV cache repeated for its k children;
- a step's log-prob for the PUCT prior comes from the sampling pass's own logits, not from a
  second forward;
- the self-evaluations of all new children run as one batched forward that keeps only the
  last position's logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from components.logprobs import position_ids_for
from components.trainers.common import model_device


@dataclass
class Candidate:
    text: str  # the step, without its trailing newline
    logp: float  # log π(step | state) at temperature 1, EOS included when it ended the step
    n_tokens: int
    ended: bool  # the policy emitted EOS: the solution is over
    token_ids: list[int]  # the sampled tokens the log-prob covers (EOS included when it ended the step)


def cut_step(tokens: list[int], logps: list[float], eos_id: int, decode) -> Candidate:
    """A step is everything up to and including the first newline, or up to EOS."""
    kept: list[int] = []
    total = 0.0
    for token, logp in zip(tokens, logps, strict=True):
        total += logp
        if token == eos_id:
            return Candidate(decode(kept).strip(), total, len(kept) + 1, True, kept + [token])
        kept.append(token)
        if "\n" in decode([token]):
            break
    return Candidate(decode(kept).split("\n", 1)[0].strip(), total, len(kept), False, kept)


class StepPolicy:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int = 32,
                 temperature: float = 1.0, reuse_prefix_cache: bool = True) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.reuse_prefix_cache = reuse_prefix_cache
        self.expanded_tokens = 0  # prefix tokens encoded, for throughput accounting

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    @torch.inference_mode()
    def sample_steps(self, contexts: list[str], k: int, seed: int) -> list[list[Candidate]]:
        """k candidate next steps for each context (prompt + steps so far), in one generate call."""
        tok = self.tokenizer
        tok.padding_side = "left"
        enc = tok(contexts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = model_device(self.model)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
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
        out = self.model.generate(
            input_ids=ids.repeat_interleave(k, 0), attention_mask=mask.repeat_interleave(k, 0),
            do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0, max_new_tokens=self.max_new_tokens,
            stop_strings=["\n"], tokenizer=tok, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            output_logits=True, return_dict_in_generate=True, **extra)
        new_tokens = out.sequences[:, ids.shape[1]:]
        # log π at temperature 1 from the raw logits of the sampling pass: no second forward
        logits = torch.stack(out.logits, dim=1).float()  # [B·k, T, V]
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        results: list[list[Candidate]] = []
        for row, (tokens, logps) in enumerate(zip(new_tokens.tolist(), token_logps.tolist(), strict=True)):
            if row % k == 0:
                results.append([])
            results[-1].append(cut_step(tokens, logps, tok.eos_token_id, self._decode))
        return results

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
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids_for(mask),
                                logits_to_keep=1).logits[:, -1, :].float()
            out += torch.softmax(logits, dim=-1)[:, targets].tolist()
        return out


SELF_EVAL_QUESTION = ("Is the partial solution above heading the correct way to the answer? "
                      "(A) incorrect (B) correct")


def self_eval_prompt(tokenizer: PreTrainedTokenizerBase, question: str, reference_solution: str | None,
                     steps: list[str]) -> str:
    """The policy judges its own partial solution; the option letter follows the open parenthesis."""
    reference = f"Reference solution:\n{reference_solution}\n\n" if reference_solution else ""
    partial = "\n".join(steps) if steps else "(no steps yet)"
    content = f"Question:\n{question}\n\n{reference}Partial solution:\n{partial}\n\n{SELF_EVAL_QUESTION}"
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True) + "The answer is ("
