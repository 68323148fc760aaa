"""Tiny random test models: seeded 2-layer Llama / Gemma3 with a 128-token character-level
tokenizer, built in-process in milliseconds."""

from __future__ import annotations

import torch

_TINY_SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
_TINY_CHARS = [chr(i) for i in range(32, 127)] + ["\n", "\t"]
_TINY_BIGRAMS = ["th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te",
                 "of", "ed", "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as"]
_TINY_VOCAB = _TINY_SPECIALS + _TINY_CHARS + _TINY_BIGRAMS  # 128 tokens
_TINY_CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ 'assistant: ' }}{%- endif %}"
)
_TINY_ALIASES = {"llama": "tiny-llama", "tiny-llama": "tiny-llama",
                 "gemma3": "tiny-gemma3", "gemma": "tiny-gemma3", "tiny-gemma3": "tiny-gemma3"}


def _tiny_tokenizer():
    """Character-level BPE tokenizer over 128 tokens (4 specials, printable ASCII + \\n \\t,
    27 common bigrams). Text outside that alphabet maps to <unk>."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(_TINY_VOCAB)}
    merges = [(b[0], b[1]) for b in _TINY_BIGRAMS]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = _TINY_CHAT_TEMPLATE
    return tok


def tiny_model_config(kind: str):
    """Config of a tiny test model: ``kind`` is ``tiny-llama``/``llama`` or ``tiny-gemma3``/``gemma3``."""
    name = _TINY_ALIASES.get(kind.lower())
    common = dict(
        vocab_size=len(_TINY_VOCAB), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
        # Far larger than the default 0.02: a peaked, context-dependent random model (median top-1
        # probability about 0.5) so greedy argmax ties are rare and sampled outputs are not uniform.
        initializer_range=0.5,
    )
    if name == "tiny-llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if name == "tiny-gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**common, sliding_window=16, query_pre_attn_scalar=16,
                                layer_types=["sliding_attention", "full_attention"])
    raise ValueError(f"unknown tiny model kind {kind!r}; use one of {sorted(set(_TINY_ALIASES))}")


def build_tiny(name: str):
    config = tiny_model_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name == "tiny-llama":
            from transformers import LlamaForCausalLM

            model = LlamaForCausalLM(config)
        else:
            from transformers import Gemma3ForCausalLM

            model = Gemma3ForCausalLM(config)
            # Gemma multiplies embeddings by sqrt(hidden) and ties them to the head: with the large
            # init the token's own embedding dominates and the model just repeats one token. Small
            # embeddings + a large final-norm gain (Gemma norms scale by 1 + weight) give the same
            # logit spread as tiny-llama with context-dependent predictions.
            with torch.no_grad():
                model.model.embed_tokens.weight.normal_(0.0, 0.02)
                model.model.norm.weight.fill_(23.0)
    model.config.name_or_path = name
    tok = _tiny_tokenizer()
    tok.name_or_path = name
    return model, tok
