"""Self-distillation: the target regenerates responses to prompts (sharded JSONL, resumable).

    python -m train.distill --model smollm2-135m --out data/distill --num-prompts 200 \
        --batch-size 16 --max-new-tokens 128 [--temperature 0.7] [--prompts builtin|file.jsonl|file.txt|hf:name]
Rerunning the same command resumes: prompts already written are skipped, none is written twice.
The last line printed is JSON (throughput included).
"""
from __future__ import annotations

import argparse
import json
import sys

from mtp.cli import cli_main


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.distill", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="mtp.load_model name or path")
    ap.add_argument("--out", required=True, help="output folder (shard-*.jsonl + meta.json)")
    g = ap.add_argument_group("prompts")
    g.add_argument("--prompts", default="builtin", help="builtin | a .jsonl / .txt file | hf:<dataset>[:<config>]")
    g.add_argument("--split", default="train", help="split of an HF dataset")
    g.add_argument("--num-prompts", type=int, default=0, help="first N prompts (0: all)")
    g.add_argument("--shuffle", action="store_true", help="take the N prompts from a seeded shuffle (a mix of categories)")
    g.add_argument("--categories", nargs="*", help="only these categories (builtin set: chat writing code math qa "
                                                     "summarization translation extraction multi-turn)")
    g = ap.add_argument_group("generation")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--backend", choices=["hf", "engine"], default="hf",
                   help="hf: transformers batched generate (faster for plain sampling); engine: mtp.generate")
    g.add_argument("--on-long-prompt", choices=["error", "skip"], default="error")
    g.add_argument("--shard-size", type=int, default=256, help="records per shard")
    g.add_argument("--dtype", default=None, help="model dtype (default fp32 on CPU, bf16 on GPU)")
    g.add_argument("--device", default=None)
    g.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)

    from mtp.data import DataError, DistillConfig, distill, load_prompts
    from mtp.data.distill import check_config
    from mtp.models import load_model

    if a.num_prompts < 0:
        ap.error(f"--num-prompts must be >= 0 (0: all), got {a.num_prompts}")
    try:
        cfg = DistillConfig(max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, temperature=a.temperature,
                            top_p=a.top_p, seed=a.seed, shard_size=a.shard_size, backend=a.backend,
                            on_long_prompt=a.on_long_prompt)
        check_config(cfg)  # before loading anything or writing meta.json
        prompts = load_prompts(a.prompts, split=a.split, categories=a.categories)
        if a.shuffle:
            import random

            random.Random(a.seed).shuffle(prompts)
        prompts = prompts[: a.num_prompts or None]
        model, tok = load_model(a.model, dtype=a.dtype, device=a.device)
        stats = distill(model, tok, prompts, a.out, cfg, model_name=a.model, progress=not a.no_progress)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
