"""Pieces the eval scripts share: model loading flags, optional wandb (run metadata: mtp.runinfo)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="smollm2-135m", help="built-in name, local folder or hub id")
    g.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: fp32 on CPU, bf16 on CUDA)")
    g.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def load_target(args):
    import torch

    from mtp.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_model(args.model, dtype=args.dtype, device=args.device)


class _NoRun:
    """Stand-in for a wandb run when logging is off."""

    def log(self, *a, **k):
        pass

    def finish(self):
        pass


def init_wandb(enabled: bool, project: str, config: dict, out_dir: Path, name: str | None = None):
    """A wandb run (offline unless WANDB_MODE says otherwise) or a no-op stand-in."""
    if not enabled:
        return _NoRun()
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb

    return wandb.init(project=project, config=config, dir=str(out_dir), name=name, reinit=True)


def log_table(run, key: str, rows: list[dict]) -> None:
    if isinstance(run, _NoRun) or not rows:
        return
    import wandb

    cols = list(rows[0])
    run.log({key: wandb.Table(columns=cols, data=[[str(r.get(c)) if isinstance(r.get(c), (list, dict)) else r.get(c)
                                                   for c in cols] for r in rows])})


def parse_methods(text: str) -> list[tuple[str, str]]:
    """"hf,copy=vanilla" -> [("hf", "hf"), ("copy", "vanilla")]; names must be unique."""
    out = []
    for part in (t.strip() for t in text.split(",")):
        if not part:
            continue
        name, _, spec = part.partition("=") if "=" in part else (part, "", part)
        out.append((name.strip(), spec.strip()))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise SystemExit(f"method names must be unique, got {names}; rename one with name=spec")
    return out
