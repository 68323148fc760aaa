"""Train MTP draft heads on a frozen (or jointly trained) target.

    python -m train.heads --config train/configs/medusa.yaml [key=value ...] [--resume]
    accelerate launch --multi_gpu --num_processes N -m train.heads --config ...   # same script, N processes
    accelerate launch --config_file train/accelerate/{cpu_ddp,fsdp,deepspeed_zero2}.yaml -m train.heads ...

Overrides are dotted config keys (see mtp/training/config.py), values parsed as YAML:
    optim.lr=3e-4 head.args.num_heads=3 data.cache=data/cache/medusa log.wandb=disabled
The resolved config is saved as <out_dir>/<name>/config.{yaml,json}; the last line printed is JSON.

    python -m train.heads --config <run's config> --eval-only
evaluates the run's latest checkpoint on its held-out split again (no training) and appends that
row to metrics.jsonl: how a run trained before a metric existed gets it (e.g. the acceptance by
depth and rank that heads:<dir>:autotree reads).
    python -m train.heads --config <run's config> --eval-only data.eval=held.jsonl
scores the same checkpoint on another held-out file (records as data.train takes them) and prints
it, writing nothing in the run folder: heads trained on different data, compared on one held-out set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from mtp.cli import cli_main


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.heads", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="recipe YAML (train/configs/*.yaml)")
    ap.add_argument("--resume", action="store_true", help="continue the run in <out_dir>/<name> from its latest checkpoint")
    ap.add_argument("--eval-only", action="store_true",
                    help="evaluate the run's latest checkpoint on its held-out split and log the row (or on data.eval=FILE, logging nothing); no training")
    ap.add_argument("--wandb", choices=["offline", "online", "disabled"], help="shortcut for log.wandb=...")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    a = ap.parse_args(argv)

    from mtp.data.prompts import DataError
    from mtp.training import ConfigError, ResumeError, load_config, train
    from mtp.training.checkpointing import evaluate_run
    from mtp.training.trainer import NonFiniteLossError

    overrides = list(a.overrides) + ([f"log.wandb={a.wandb}"] if a.wandb else [])
    try:
        cfg = load_config(a.config, overrides)
        state = evaluate_run(cfg) if a.eval_only else train(cfg, resume=a.resume)
    except (ConfigError, DataError, ResumeError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"run_dir": str(cfg.run_dir), **state}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
