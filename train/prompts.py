"""Self-written prompts: the instruct target writes user turns itself (Magpie), deduplicated.

    python -m train.prompts --model smollm2-135m --out runs/data/prompts-smollm2.jsonl --num-prompts 2000
Rerunning with the same settings finds the finished file and does nothing; other settings are
refused (write to another --out). The file feeds `train.distill --prompts FILE`. The last line
printed is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mtp.cli import cli_main


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.prompts", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="mtp.load_model name or path (an instruct model with a chat template)")
    ap.add_argument("--out", required=True, help="output JSONL file")
    ap.add_argument("--num-prompts", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48, help="longer samples are dropped as truncated")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default=None, help="model dtype (default fp32 on CPU, bf16 on GPU)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)

    from mtp.data import DataError
    from mtp.data.magpie import MagpieConfig, self_written_prompts, write_prompts
    from mtp.models import load_model

    out = Path(a.out)
    settings = {"model": a.model, "num_prompts": a.num_prompts, "batch_size": a.batch_size,
                "max_new_tokens": a.max_new_tokens, "temperature": a.temperature, "top_p": a.top_p, "seed": a.seed,
                "dtype": a.dtype}
    meta_path = out.with_name(out.name + ".meta.json")
    if out.is_file() and meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old.get("settings") == settings:
            print(f"[prompts] {out} is complete ({old.get('kept')} prompts); nothing to do", file=sys.stderr)
            print(json.dumps(old))
            return 0
        raise DataError(f"{out} was written with other settings ({old.get('settings')}); use another --out")
    if out.exists() and not meta_path.is_file():
        raise DataError(f"{out} exists and was not written by train.prompts; choose another --out")
    if a.num_prompts < 1:
        raise DataError(f"--num-prompts must be >= 1, got {a.num_prompts}")
    cfg = MagpieConfig(max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, temperature=a.temperature,
                       top_p=a.top_p)
    model, tok = load_model(a.model, dtype=a.dtype, device=a.device)
    t0 = time.perf_counter()
    prompts = self_written_prompts(model, tok, a.num_prompts, seed=a.seed, cfg=cfg, progress=not a.no_progress)
    meta = {"settings": settings, "kept": len(prompts), "seconds": round(time.perf_counter() - t0, 1)}
    write_prompts(prompts, out, meta)
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
