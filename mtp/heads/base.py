"""The contract every MTP head family implements (trainer, checkpoints and drafting rely on it).

Indexing convention (the target shift lives here, once):
    the target's own logits at position t predict token t+1;
    head output j (0-based, j < num_heads) at position t predicts token t+2+j.
So `forward_train(...).logits[j][:, t]` is trained against `input_ids[:, t + 2 + j]`, and at
decode time, given the target's hidden state at the last committed position (whose own next token
is the pending token), head j drafts the (j+1)-th token after the pending token.
"""
from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class HeadConfig:
    """Fields shared by every family; each family subclasses it with its own fields."""

    family: str = ""
    num_heads: int = 4  # K: tokens drafted per step (chain length)
    hidden_size: int = 0  # filled from the target's config when 0
    vocab_size: int = 0  # filled from the target's config when 0
    hidden_layers: tuple[int, ...] = (-1,)  # indices into HF output_hidden_states (-1: last, post-norm)
    # a reduced draft vocabulary (EAGLE-3 / FR-Spec): the Vd most frequent target tokens; None: all V
    draft_vocab_size: int | None = None
    base_model: str = ""  # the target's name (config.name_or_path)
    base_fingerprint: str = ""  # mtp.models.model_fingerprint(target)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_layers"] = list(self.hidden_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HeadConfig":
        names = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(names)}")
        d = dict(d)
        if "hidden_layers" in d:
            d["hidden_layers"] = tuple(d["hidden_layers"])
        return cls(**d)


@dataclass
class HeadTrainOutput:
    """logits[j]: [B, T, V] draft logits of head j (predicting token t+2+j at position t), or
    [B, T, Vd] over a reduced draft vocabulary when `vocab` is set.
    vocab: None, or d2t [Vd] (draft index -> target token id) when the logits are over the draft
        vocabulary only (EAGLE-3 / FR-Spec style); losses map labels through it.
    aux_losses: family-specific extra loss terms already weighted (e.g. EAGLE's feature loss).
    metrics: extra scalars to log."""

    logits: list[torch.Tensor]
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    vocab: torch.Tensor | None = None


#: where decoders keep their final norm (the first one present is used)
FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f")


class TargetParts:
    """Frozen pieces of the target a head reuses (embedding, LM head, final norm, layer class),
    held outside the head's own parameters so checkpoints never save them."""

    def __init__(self, target: nn.Module) -> None:
        self.model = target
        self.embed = target.get_input_embeddings()
        self.lm_head = target.get_output_embeddings()
        self.config = target.config
        # the decoder under the LM head: .model in Llama-style models, .gpt_neox in GPT-NeoX (Pythia)
        base = getattr(target, "base_model", None)
        base = None if base is target else base
        # the final norm (HF hidden_states[-1] is already normed): .norm in Llama-style decoders,
        # .final_layernorm (a LayerNorm) in Phi's, .final_layer_norm in GPT-NeoX's, .ln_f in GPT-2's
        self.norm = next((m for m in (getattr(base, a, None) for a in FINAL_NORM_NAMES) if m is not None), None)
        self.rotary_emb = getattr(base, "rotary_emb", None)
        # positions: a rotary embedding applied inside attention, or (GPT-2) learned absolute
        # positions added to the decoder's input, .wpe
        self.position_embed = getattr(base, "wpe", None) if self.rotary_emb is None else None
        layers = getattr(base, "layers", None)
        layers = getattr(base, "h", None) if layers is None else layers  # GPT-2's blocks
        self.layer_class = type(layers[0]) if layers is not None and len(layers) else None

    def logits(self, h: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The target's own unembedding of a post-norm hidden state [..., H] -> [..., V]
        (with Gemma's final logit soft-capping when the config has it); with `rows` [Vd, H] (a
        subset of the LM head's rows: a reduced draft vocabulary) -> [..., Vd]."""
        if rows is not None:
            out = torch.nn.functional.linear(h.to(rows.dtype), rows)
        else:
            out = self.lm_head(h.to(self.lm_head.weight.dtype))
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            out = torch.tanh(out / cap) * cap
        return out


class MTPHead(nn.Module, abc.ABC):
    """Base of every head family. Subclasses set `family` and `config_class`."""

    family: ClassVar[str] = ""
    config_class: ClassVar[type[HeadConfig]] = HeadConfig
    #: extra construction-only keyword arguments build_head passes to __init__
    build_kwargs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def resolve_hidden_layers(cls, config: HeadConfig, num_layers: int) -> tuple[int, ...]:
        """Check config.hidden_layers against the target's depth (indices into HF's
        output_hidden_states, 0..num_layers or negative)."""
        layers = tuple(int(i) for i in config.hidden_layers)
        if not layers:
            raise ValueError(f"{cls.family}: hidden_layers is empty")
        for i in layers:
            if not -(num_layers + 1) <= i <= num_layers:
                raise ValueError(f"{cls.family}: hidden layer {i} out of range for a {num_layers}-layer target "
                                 f"(HF output_hidden_states has {num_layers + 1} entries)")
        return layers

    def __init__(self, config: HeadConfig, target: nn.Module) -> None:
        super().__init__()
        self.config = config
        # Not a submodule: the target's weights are not the head's.
        object.__setattr__(self, "target", TargetParts(target))

    @abc.abstractmethod
    def forward_train(
        self,
        hidden_states: dict[int, torch.Tensor],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> HeadTrainOutput:
        """Teacher-forced draft logits for every position of a batch.

        hidden_states: {layer: [B, T, H]} target hidden states for config.hidden_layers (from one
            target forward over input_ids with output_hidden_states=True).
        input_ids: [B, T] the sequence (families that condition on future tokens use the true ones).
        """

    def as_drafter(self, num_draft_tokens: int | None = None, tree=None, draft_temperature: float | None = None,
                   sample_tree: bool = False):
        """An `mtp.drafters.Drafter` that drafts chains with this head (default length
        config.num_heads; parallel families draft at most num_heads tokens per step), or token
        trees with `tree=` an mtp.tree.StaticTree or mtp.tree.DynamicTreeConfig. draft_temperature:
        how chains draft at T > 0; sample_tree: a static tree's nodes sampled at T > 0 (see
        mtp.heads.drafting.HeadDrafter)."""
        from mtp.heads.drafting import HeadDrafter

        return HeadDrafter(self, num_draft_tokens, tree=tree, draft_temperature=draft_temperature,
                           sample_tree=sample_tree)

    @property
    def max_draft_tokens(self) -> int | None:
        """Most tokens one drafting step can give (None: autoregressive, any number)."""
        return self.config.num_heads

    @property
    def draft_vocab(self) -> torch.Tensor | None:
        """d2t [Vd] (draft index -> target id) when the head's logits are over a reduced draft
        vocabulary, else None (over the target's)."""
        return None

    # Drafting hooks (see mtp/heads/drafting.py): per-generation state, feed newly committed
    # positions, draft a chain by calling pick(logits [B, V or Vd]) -> target token ids [B] once
    # per token.
    def draft_state(self, batch_size: int, device: torch.device) -> Any:
        raise NotImplementedError(f"{type(self).__name__} cannot draft")

    def draft_observe(self, state: Any, hidden_states: dict[int, torch.Tensor], counts: torch.Tensor,
                      sequences: list[list[int]]) -> None:
        raise NotImplementedError

    def draft_chain(self, state: Any, sequences: list[list[int]], num_tokens: int, pick) -> None:
        raise NotImplementedError

    def loss_weights(self) -> list[float]:
        """Suggested weight of each head's token loss (len num_heads); 1.0 each unless the family
        says otherwise (EAGLE: 0.1 next to its feature loss; EAGLE-3: 0.8**j)."""
        return [1.0] * self.config.num_heads

    def save_pretrained(self, directory) -> None:
        """Write `model.safetensors` (the head's own tensors only) + `config.json`, atomically."""
        from mtp.heads.checkpoint import save_head

        save_head(self, directory)
