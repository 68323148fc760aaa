"""Acceptance statistics, defined once (see REFERENCES.md for the definitions).

- tau: tokens emitted per decode-step target forward, bonus/correction token included (plain
  decoding: 1). The prefill forward, which emits the first token, is not a decode step: for a
  chain, tau = 1 + sum_k a_k holds exactly when every step drafts the same length.
- tokens per forward: new tokens / all target forwards, prefill included (a separate figure).
- per-position acceptance a_k: P(at least k drafts accepted in a step), over the steps that drafted
  at least k tokens (a step near max_new_tokens drafts fewer; it says nothing about position k).
- draft acceptance rate: accepted drafts / drafted tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpecStats:
    """Counts for one or more generations. Merge with `+` or `merge`.

    Every emitted token is either an accepted draft or a token the target chose itself (the first
    token after prefill, a correction or a bonus token), so new_tokens == accepted + target_tokens.
    """

    target_forwards: int = 0
    new_tokens: int = 0
    target_tokens: int = 0
    prefills: int = 0  # prefill forwards among target_forwards (each emits exactly one token)
    # One entry per speculative step (a verify forward that checked >= 1 draft):
    accept_lengths: list[int] = field(default_factory=list)
    draft_lengths: list[int] = field(default_factory=list)  # drafted tokens (tree: nodes)
    draft_depths: list[int] = field(default_factory=list)  # longest acceptable path (chain: = length)
    wall_time_s: float = 0.0
    draft_time_s: float = 0.0  # time in the drafter after prefill: propose and observe (its work on verified tokens)
    # Timed target forwards (kit engine): the prefill's seconds, and one [drafted, tree, seconds] per
    # decode forward (tokens drafted into it, 1 if under a tree mask, its time with acceptance and the
    # cache rollback). A forward that served a batch is split evenly over its rows.
    prefill_time_s: float = 0.0
    step_costs: list[list] = field(default_factory=list)

    # -- recording -----------------------------------------------------------------------------
    def record_step(self, drafted: int, accepted: int, target_token: bool, depth: int | None = None,
                    prefill: bool = False) -> None:
        """One target forward for this row: `accepted` drafts and (maybe) one target token emitted.
        `depth`: a tree's depth (defaults to `drafted`, a chain). prefill: the prompt's forward."""
        self.target_forwards += 1
        self.prefills += int(prefill)
        if drafted > 0:
            self.draft_lengths.append(drafted)
            self.draft_depths.append(drafted if depth is None else depth)
            self.accept_lengths.append(accepted)
        self.new_tokens += accepted + int(target_token)
        self.target_tokens += int(target_token)

    def merge(self, other: "SpecStats") -> "SpecStats":
        return SpecStats(
            target_forwards=self.target_forwards + other.target_forwards,
            new_tokens=self.new_tokens + other.new_tokens,
            target_tokens=self.target_tokens + other.target_tokens,
            prefills=self.prefills + other.prefills,
            accept_lengths=self.accept_lengths + other.accept_lengths,
            draft_lengths=self.draft_lengths + other.draft_lengths,
            draft_depths=self.draft_depths + other.draft_depths,
            wall_time_s=self.wall_time_s + other.wall_time_s,
            draft_time_s=self.draft_time_s + other.draft_time_s,
            prefill_time_s=self.prefill_time_s + other.prefill_time_s,
            step_costs=self.step_costs + other.step_costs,
        )

    __add__ = merge

    @classmethod
    def sum(cls, items) -> "SpecStats":
        total = cls()
        for s in items:
            total = total + s
        return total

    def record_forward_time(self, drafted: int, tree: bool, seconds: float) -> None:
        """The time of one decode-step target forward (see `step_costs`)."""
        self.step_costs.append([int(drafted), int(tree), round(float(seconds), 7)])

    @property
    def verify_time_s(self) -> float:
        """Seconds in timed decode-step target forwards (acceptance and cache rollback included)."""
        return sum(c[2] for c in self.step_costs)

    # -- derived metrics -------------------------------------------------------------------------
    @property
    def drafted(self) -> int:
        return sum(self.draft_lengths)

    @property
    def accepted(self) -> int:
        return sum(self.accept_lengths)

    @property
    def tau(self) -> float:
        """Mean tokens per decode-step target forward, bonus token included (prefill excluded)."""
        steps = self.target_forwards - self.prefills
        return (self.new_tokens - self.prefills) / steps if steps > 0 else float("nan")

    @property
    def tokens_per_forward(self) -> float:
        """New tokens per target forward, the prefill forward included."""
        return self.new_tokens / self.target_forwards if self.target_forwards else float("nan")

    @property
    def draft_acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def max_draft(self) -> int:
        """The longest draft chain (tree depth) of any step."""
        return max(self.draft_depths or self.draft_lengths, default=0)

    def accept_length_histogram(self) -> list[int]:
        """counts[j] = speculative steps that accepted exactly j drafts, j = 0..max drafted."""
        counts = [0] * (self.max_draft + 1)
        for a in self.accept_lengths:
            counts[a] += 1
        return counts

    def per_position_acceptance(self) -> list[float]:
        """a_k = P(>= k drafts accepted), k = 1..max drafted, over the steps that drafted at least
        k tokens (depth >= k for trees)."""
        if not self.accept_lengths:
            return []
        depths = self.draft_depths if len(self.draft_depths) == len(self.accept_lengths) else self.draft_lengths
        out = []
        for k in range(1, self.max_draft + 1):
            pairs = [(a, d) for a, d in zip(self.accept_lengths, depths) if d >= k]
            out.append(sum(a >= k for a, _ in pairs) / len(pairs) if pairs else float("nan"))
        return out

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_time_s if self.wall_time_s > 0 else float("nan")

    def to_dict(self) -> dict:
        return {
            "target_forwards": self.target_forwards,
            "new_tokens": self.new_tokens,
            "tau": self.tau,
            "tokens_per_forward": self.tokens_per_forward,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "draft_acceptance_rate": self.draft_acceptance_rate,
            "accept_rate_per_position": self.per_position_acceptance(),
            "accept_length_histogram": self.accept_length_histogram(),
            "wall_time_s": self.wall_time_s,
            "draft_time_s": self.draft_time_s,
            "prefill_time_s": self.prefill_time_s,
            "verify_time_s": self.verify_time_s,
            "tokens_per_s": self.tokens_per_s,
        }

    def __repr__(self) -> str:
        return (
            f"SpecStats(tokens={self.new_tokens}, forwards={self.target_forwards}, tau={self.tau:.3f}, "
            f"acceptance={self.draft_acceptance_rate:.3f}, per_position={[round(a, 3) for a in self.per_position_acceptance()]})"
        )
