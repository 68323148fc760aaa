"""The drafter interface: propose up to k tokens, then hear what the target did.

The engine calls, per generation:
    drafter.reset(prompts)                       # once, with the unpadded prompt of each row
    drafter.observe(feedback)                    # after prefill and after every verify forward
    draft = drafter.propose(context)             # before every verify forward
`observe` receives what the target's forward produced (logits and the hidden states of the layers
in `hidden_layers`), so heads draft from them without a second target pass.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import torch

from mtp.sampling import SamplingConfig


@dataclass
class Draft:
    """A padded batch of draft chains.

    tokens: [B, K] proposed tokens (anything past a row's length is ignored).
    lengths: [B] real drafts per row (0..K).
    probs: [B, K, V] the distribution q each token was sampled from (shaped by the same
        SamplingConfig as the target), or None for a deterministic drafter (q = point mass).
    parents: None for chains; for a tree, [B, K] the parent of each node (-1: the pending token,
        else an earlier node index; see mtp.tree). Siblings are either deterministic and distinct
        (probs None) or i.i.d. draws from the q given for each of them.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    probs: torch.Tensor | None = None
    parents: torch.Tensor | None = None

    @classmethod
    def empty(cls, batch_size: int, device: torch.device | str) -> "Draft":
        return cls(
            tokens=torch.zeros(batch_size, 0, dtype=torch.long, device=device),
            lengths=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    @classmethod
    def from_lists(cls, chains: list[list[int]], device: torch.device | str, pad: int = 0) -> "Draft":
        K = max((len(c) for c in chains), default=0)
        tokens = torch.full((len(chains), K), pad, dtype=torch.long)
        for r, c in enumerate(chains):
            if c:
                tokens[r, : len(c)] = torch.as_tensor(c, dtype=torch.long)
        lengths = torch.tensor([len(c) for c in chains], dtype=torch.long)
        return cls(tokens.to(device), lengths.to(device))

    @classmethod
    def from_trees(cls, trees: list[tuple[list[int], list[int]]], device: torch.device | str) -> "Draft":
        """Pad per-row (tokens, parents) trees (mtp.tree layout) into a tree Draft (deterministic nodes)."""
        N = max((len(t) for t, _ in trees), default=0)
        tokens = torch.zeros(len(trees), N, dtype=torch.long)
        parents = torch.full((len(trees), N), -1, dtype=torch.long)
        for r, (t, p) in enumerate(trees):
            tokens[r, : len(t)] = torch.as_tensor(t, dtype=torch.long)
            parents[r, : len(p)] = torch.as_tensor(p, dtype=torch.long)
        lengths = torch.tensor([len(t) for t, _ in trees], dtype=torch.long)
        return cls(tokens.to(device), lengths.to(device), None, parents.to(device))

    @property
    def max_len(self) -> int:
        return self.tokens.shape[1]


@dataclass
class DraftContext:
    """What a drafter may look at when proposing.

    sequences: per row, prompt + every committed token; the last one is the pending token that the
        target has not consumed yet (drafts continue after it).
    max_tokens: propose at most this many per row (for a tree: at most this depth).
    active: per row, False once the row has finished (its drafts are ignored).
    """

    sequences: list[list[int]]
    max_tokens: int
    sampling: SamplingConfig
    generator: torch.Generator | None
    active: list[bool]
    device: torch.device


@dataclass
class TargetFeedback:
    """What one target forward (prefill or verify) produced.

    input_ids: [B, m] tokens fed (the padded prompt at prefill; [pending, d_1..d_K] at verify).
    valid: [B, m] bool, inputs that are now part of the committed context (prompt tokens at
        prefill; the first num_accepted+1 inputs at chain verify; the pending token and the
        accepted path's nodes at tree verify — in increasing index order, which is path order).
    position_ids: [B, m] positions of the inputs.
    hidden_states: {layer: [B, m, H]} for the drafter's `hidden_layers` (indices into HF's
        `output_hidden_states` tuple: 0 = embeddings, -1 = last, post final norm).
    logits: [B, m, V] at verify; at prefill [B, 1, V] (last position).
    new_tokens: per row, the tokens committed by this forward (accepted drafts then the target's
        own token, which is the new pending token). Empty for finished rows.
    num_accepted: [B] accepted drafts per row (0 at prefill).
    """

    input_ids: torch.Tensor
    valid: torch.Tensor
    position_ids: torch.Tensor
    hidden_states: dict[int, torch.Tensor]
    logits: torch.Tensor | None
    new_tokens: list[list[int]]
    num_accepted: torch.Tensor
    is_prefill: bool


class Drafter(abc.ABC):
    """Base class of every drafter: n-gram lookup, draft models, MTP heads, test drafters."""

    #: default number of tokens to propose per step
    num_draft_tokens: int = 4
    #: target hidden-state layers the drafter needs in `observe` (empty: none are computed)
    hidden_layers: tuple[int, ...] = ()

    def reset(self, prompts: list[list[int]]) -> None:
        """Start a new generation for these prompts (one list of ids per row, no padding)."""

    def for_row(self, row: int) -> "Drafter":
        """The drafter to use when row `row` of a batch is decoded on its own (the engine does so on
        sliding-window models). Drafters that hold per-row data (e.g. known continuations) return
        one for that row; stateless or reset-per-generation drafters return themselves."""
        return self

    def observe(self, feedback: TargetFeedback) -> None:
        """Called after prefill and after every verify forward."""

    @abc.abstractmethod
    def propose(self, ctx: DraftContext) -> Draft:
        """Propose up to ctx.max_tokens tokens per row, continuing after the pending token."""
