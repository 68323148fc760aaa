"""A short stable hash of a model's architecture and weights (checks heads match their base model)."""

from __future__ import annotations

import hashlib
import json

import torch

_FINGERPRINT_CONFIG_KEYS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings",
    "sliding_window", "layer_types",
)


def model_fingerprint(model: torch.nn.Module, n_values: int = 64) -> str:
    """Short stable hash (16 hex chars) of a model's architecture and a sample of its weights.

    Hashes the architecture-size fields of the config, each parameter's name and shape, and
    ``n_values`` values of each parameter (half from its start, half evenly spaced) rounded to
    bfloat16, so the same weights loaded in float32 or bfloat16, on any device, give the same
    fingerprint. Use it to check that heads were trained on this base model.
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        cfg = {k: getattr(config, k, None) for k in _FINGERPRINT_CONFIG_KEYS}
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    half = n_values // 2
    with torch.no_grad():
        for pname, p in model.named_parameters():
            h.update(f"{pname}:{tuple(p.shape)};".encode())
            flat = p.detach().reshape(-1)
            n = flat.numel()
            if n == 0:
                continue
            k = min(n_values - half, n)
            spread = torch.arange(k, dtype=torch.int64) * (n - 1) // max(k - 1, 1)
            idx = torch.cat([torch.arange(min(half, n), dtype=torch.int64), spread])
            vals = flat[idx.to(flat.device)].to(torch.bfloat16).float().cpu()
            h.update(vals.numpy().tobytes())
    return h.hexdigest()[:16]
