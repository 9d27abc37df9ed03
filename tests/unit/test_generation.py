"""What a completion reports about itself: its text and its token count must agree."""

from __future__ import annotations

import torch

from alignflow.components.modeling.generation import generate_completions


class _Scripted:
    """A model whose ``generate`` appends fixed tokens to every prompt row (as transformers returns them)."""

    device = torch.device("cpu")

    def __init__(self, new_tokens: list[list[int]]):
        self.new_tokens = new_tokens

    def eval(self) -> _Scripted:
        return self

    def parameters(self):  # where the sampler backend looks for the model's device
        yield torch.zeros(1)

    def generate(self, input_ids: torch.Tensor, num_return_sequences: int = 1, **_: object) -> torch.Tensor:
        rows = input_ids.repeat_interleave(num_return_sequences, dim=0)
        return torch.cat([rows, torch.tensor(self.new_tokens[: rows.shape[0]])], dim=1)


def test_n_tokens_counts_only_what_decoding_keeps(tokenizer):
    """A special token the model emits mid-text is dropped from the text by skip_special_tokens: it was
    counted all the same, so text and count disagreed."""
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    repo_name = tokenizer.convert_tokens_to_ids("<repo_name>")  # special, but not in the special-tokens map
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    head, tail = ids("The answer"), ids(" is 5.")
    stopped = head + [im_start] + tail + [repo_name, eos, pad, pad]
    width = len(stopped)
    cut = (head + tail + ids(" So") + [im_start] + ids(" more words and more words"))[:width]  # no EOS: max_new_tokens
    assert len(cut) == width and im_start in cut
    model = _Scripted([stopped, cut])
    first, second = generate_completions(model, tokenizer, ["Q1", "Q2"], k=1, do_sample=False,  # type: ignore[arg-type]
                                         max_new_tokens=width, batch_size=2)
    assert first.text == "The answer is 5."
    assert first.n_tokens == len(head) + len(tail)
    assert second.n_tokens == width - 1 == len([t for t in cut if t != im_start])
    assert tokenizer.decode(cut, skip_special_tokens=True).strip() == second.text
    # what the KL estimate needs to know, now that the count skips special tokens: did it stop at EOS?
    assert first.stopped_at_eos and not second.stopped_at_eos
