"""Sampling: a request's settings and the choice of its next token from the model's logits.

Greedy rows take one `argmax` over the whole batch (in `Batch`); sampled rows get their own
temperature and top-p and their own `torch.Generator`, seeded when the request gives a seed, so a
seed reproduces whatever else shares the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GREEDY_BELOW = 1e-5  # temperatures this small are greedy (dividing logits by 1e-300 overflows)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


def generator_for(params: SamplingParams, device: Any) -> Any:
    """A sampled row's own generator (seeded from the request, else at random); None for a greedy row."""
    if params.greedy:
        return None
    import torch

    generator = torch.Generator(device=device)
    if params.seed is not None:
        generator.manual_seed(params.seed)
    else:
        generator.seed()
    return generator


def sample(logits: Any, params: SamplingParams, generator: Any) -> int:
    """Temperature and nucleus (top-p) sampling for one row, with that row's own generator."""
    import torch

    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the most likely token)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
        sorted_probs[outside] = 0
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))
