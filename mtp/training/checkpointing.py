"""Run folders and checkpoints of the trainer: refusing to overwrite a run, resuming from the
newest intact checkpoint (damaged ones are moved aside), atomic checkpoints and heads."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from mtp.io import atomic_write_text
from mtp.training.config import config_diff, with_defaults


class ResumeError(RuntimeError):
    """A resume that cannot continue the saved run."""


def metrics_step(line: str) -> float:
    """The step of a metrics.jsonl line; a torn or malformed line (a killed write) counts as after any step."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it looks intact): missing, no
    readable trainer_state.json, or a safetensors file shorter or longer than its header says."""
    if not path.is_dir():
        return "folder missing"
    try:
        json.loads((path / "trainer_state.json").read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"trainer_state.json unreadable ({type(e).__name__})"
    from mtp.io import safetensors_problem

    for f in sorted(path.rglob("*.safetensors")):
        problem = safetensors_problem(f)
        if problem:
            return problem
    return None


def saved_config_diff(cfg) -> list[str] | None:
    """The config keys in which `cfg` differs from the run it names, as saved in its config.json
    (keys added to the kit since take their defaults); None when no run is saved there."""
    cfg_path = cfg.run_dir / "config.json"
    if not cfg_path.is_file():
        return None
    try:
        old = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise ResumeError(f"--resume: {cfg_path} is malformed ({e}); restore it from config.yaml "
                          "or start a new run (name=...)") from None
    return config_diff(with_defaults(old), cfg.to_dict())


class CheckpointMixin:
    """Trainer methods for its run folder and checkpoints (uses self.acc, self.cfg, self.run_dir,
    self.ckpt_dir, self.state, self.module, self.target, self.tokenizer, self.joint)."""

    def _prepare_run_dir(self, resume: bool, allow: tuple[str, ...] = ()) -> None:
        """Check the run folder against this config; `allow`: config keys (prefixes) that may differ
        from the saved run's (evaluating on another held-out set)."""
        diff = saved_config_diff(self.cfg) if resume else None
        if resume and diff is None:  # nothing to resume yet (e.g. a preemptible job's first start)
            self.acc.print(f"[train] --resume: {self.run_dir} holds no run yet; starting a new one")
        elif resume:
            diff = [k for k in diff if not k.startswith(allow)]
            if diff:
                raise ResumeError(f"--resume: the config differs from the saved run in {diff}; resume with the same "
                                  f"config (see {self.run_dir / 'config.yaml'}) or start a new run (name=...)")
        elif (self.ckpt_dir / "latest").is_file():
            raise ResumeError(f"{self.run_dir} already holds a run with checkpoints: pass --resume to continue it, "
                              "or choose another name=... / out_dir=...")

    def _load_latest(self) -> None:
        """Load the newest intact checkpoint: the one `latest` names, else (damaged or missing) the
        previous ones, newest first, with a message. Damaged ones are moved to checkpoints/damaged/."""
        latest = self.ckpt_dir / "latest"
        if not latest.is_file():
            self.acc.print(f"[train] --resume: no checkpoint in {self.ckpt_dir} yet; starting from step 0")
            return
        named = self.ckpt_dir / latest.read_text().strip()
        candidates = [named] + sorted((p for p in self.ckpt_dir.glob("step-*") if p.is_dir() and p != named),
                                      reverse=True)
        damaged: list[Path] = []
        for path in candidates:
            problem = checkpoint_problem(path)
            if problem is None:
                try:
                    self.acc.load_state(str(path))
                    self.state = json.loads((path / "trainer_state.json").read_text())
                except Exception as e:  # e.g. a truncated optimizer.bin
                    problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if problem is None:
                break
            self.acc.print(f"[train] --resume: checkpoint {path} is unusable ({problem}); trying the previous one")
            if path.exists():
                damaged.append(path)
        else:
            raise ResumeError(f"--resume: no intact checkpoint in {self.ckpt_dir} ({latest} names {named.name}); "
                              "restore one, or start a new run (name=...)")
        self.acc.wait_for_everyone()
        if damaged and self.acc.is_main_process:
            (self.ckpt_dir / "damaged").mkdir(exist_ok=True)
            for d in damaged:
                os.replace(d, self.ckpt_dir / "damaged" / f"{d.name}-{int(time.time())}")
            self.acc.print(f"[train] moved {len(damaged)} damaged checkpoint(s) to {self.ckpt_dir / 'damaged'}")
        self.acc.wait_for_everyone()
        self.acc.print(f"[train] resumed from {path} at step {self.state['step']}")

    def save_checkpoint(self) -> Path:
        acc, step = self.acc, self.state["step"]
        name = f"step-{step:07d}"
        final, tmp = self.ckpt_dir / name, self.ckpt_dir / (".tmp-" + name)
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=not self.joint)  # every rank writes its RNG state
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / "trainer_state.json").write_text(json.dumps(self.state, indent=2))
            for f in tmp.rglob("*"):  # on disk before the rename makes the checkpoint visible
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            atomic_write_text(self.ckpt_dir / "latest", name + "\n")
            ckpts = sorted(p for p in self.ckpt_dir.glob("step-*") if p.is_dir())
            for old in ckpts[: max(0, len(ckpts) - max(1, self.cfg.ckpt.keep))]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def _save_head(self, which: str) -> None:
        acc = self.acc
        acc.wait_for_everyone()
        if acc.is_main_process:
            head = acc.unwrap_model(self.module).head
            if self.joint:
                from mtp.models import model_fingerprint

                head.config.base_fingerprint = model_fingerprint(self.target)
            head.save_pretrained(self.run_dir / which)  # atomic (mtp.heads.checkpoint.save_head)
            if self.joint and which == "final":
                self.target.save_pretrained(self.run_dir / which / "target")
                if self.tokenizer is not None:
                    self.tokenizer.save_pretrained(self.run_dir / which / "target")
            atomic_write_text(self.run_dir / f"{which}.json", json.dumps(
                {"step": self.state["step"], "best_tau": self.state["best_tau"], "best_step": self.state["best_step"]}))
        acc.wait_for_everyone()


EVAL_KEYS = ("data.eval", "eval.")  # what --eval-only may change: the held-out set, and how it is read


def evaluate_run(cfg) -> dict:
    """Evaluate a run's latest checkpoint on its held-out split again and append the row to its
    metrics.jsonl at that checkpoint's step (no training); returns {"step", "best_step", **eval}.
    With another held-out set than the run's (`data.eval=FILE`, or other `eval.*` settings) it
    writes nothing in the run folder and adds "eval_data": a data-scaling curve can score heads
    trained on different data on one held-out file."""
    if not (cfg.run_dir / "checkpoints" / "latest").is_file():
        raise ResumeError(f"no checkpoint in {cfg.run_dir / 'checkpoints'} to evaluate: train the run first "
                          "(python -m train.heads --config ...)")
    from mtp.training.trainer import Trainer  # imports this module

    diff = saved_config_diff(cfg) or []
    other = bool(diff) and all(k.startswith(EVAL_KEYS) for k in diff)
    t = Trainer(cfg, resume=True, other_eval=other)
    try:
        ev = t.evaluate()
        step = t.state["step"]
        if other:
            return {"step": step, "best_step": t.state["best_step"], "eval_data": cfg.data.eval or "held-out split",
                    "eval_examples": len(t.eval_idx), **ev}
        t.log(ev, step)
        if t.state["best_step"] != step:
            print(f"[train] note: best/ was saved at step {t.state['best_step']}; this evaluated step {step} "
                  "(final/ and the latest checkpoint)", file=sys.stderr)
        return {"step": step, "best_step": t.state["best_step"], **ev}
    finally:
        t.close()
