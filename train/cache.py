"""Build the hidden-state cache for a recipe (the layers its head consumes + the target's top-k logits).

    python -m train.cache --config train/configs/medusa.yaml --out data/cache/smollm2 [--dtype bf16] [--model-dtype bf16] [--topk 32] [key=value ...]
Then train with `data.cache=<out>`. Uses the recipe's data (train file, max_seq_len, max_examples) and
head (hidden_layers); `--layers` caches other layers too (e.g. one cache for several families).
`--dtype` is how the hidden states are stored; `--model-dtype` is the dtype the target runs its forward
passes in (default: the recipe's model.dtype). On CPU a bf16 forward is about 1.9x faster than fp32, and
its hidden states are the ones a bf16 target gives the heads at decode time.
The last line printed is JSON with the cache's size per million tokens.
"""
from __future__ import annotations

import argparse
import json
import sys

from mtp.cli import cli_main


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.cache", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    ap.add_argument("--model-dtype", choices=["bf16", "fp16", "fp32"], default=None,
                    help="dtype of the target's forward passes (default: the recipe's model.dtype)")
    ap.add_argument("--topk", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--layers", type=int, nargs="*", help="hidden layers (default: the recipe head's)")
    ap.add_argument("--device", default=None)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args(argv)
    for flag in ("topk", "batch_size"):
        if getattr(a, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(a, flag)}")

    import torch

    from mtp.data import DataError, load_examples
    from mtp.data.cache import HiddenStateCache, build_cache
    from mtp.models import load_model
    from mtp.training import ConfigError, load_config
    from mtp.training.trainer import build_head_for

    try:
        cfg = load_config(a.config, a.overrides)
        model_dtype = a.model_dtype or cfg.model.dtype
        target, tok = load_model(cfg.model.name, dtype=model_dtype, device=a.device)
        layers = a.layers
        if not layers:
            layers = list(build_head_for(cfg, target, torch.ones(target.config.vocab_size)).config.hidden_layers)
        ex = load_examples(cfg.data.train, tok, max_seq_len=cfg.data.max_seq_len,
                           vocab_size=target.config.vocab_size, max_examples=cfg.data.max_examples)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        meta = build_cache(target, ex, layers, a.out, dtype=a.dtype, topk=a.topk, batch_size=a.batch_size, pad_id=pad)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = HiddenStateCache(a.out).size_bytes()
    print(json.dumps({"out": a.out, "layers": meta["layers"], "dtype": a.dtype, "model_dtype": model_dtype, "topk": meta["topk"],
                      "tokens": meta["tokens"], "bytes": size, "MB_per_million_tokens": size / meta["tokens"] * 1e6 / 2**20,
                      "build_seconds": meta["build_seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
