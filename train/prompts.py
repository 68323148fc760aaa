"""Self-written prompts: the instruct target writes user turns itself (Magpie), deduplicated;
or passage tasks built from responses it already wrote (`--passages-from`, see mtp.data.passages).

    python -m train.prompts --model smollm2-135m --out runs/data/prompts-smollm2.jsonl --num-prompts 2000
    python -m train.prompts --model smollm2-135m --out runs/data/passages.jsonl --num-prompts 800 \
        --passages-from runs/data/distill --questions runs/data/prompts-smollm2.jsonl
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
    ap.add_argument("--openers", default="", metavar="LIST",
                    help="start each batch's user turns with one of these comma-separated words, in turn; 'default' "
                         "for the kit's list of task verbs and question words (mtp.data.magpie.DEFAULT_OPENERS). "
                         "More varied prompts than free sampling, whose turns drift to a few stock openings")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--passages-from", default=None, metavar="DISTILL",
                    help="build passage tasks (summarise, RAG, translate, rewrite, extract, follow-up) from the "
                         "responses in this train.distill folder instead of sampling user turns")
    ap.add_argument("--questions", default=None, metavar="PROMPTS",
                    help="with --passages-from: the prompt file(s) the responses answered (enables RAG and follow-up tasks)")
    ap.add_argument("--allow-none", action="store_true",
                    help="with --passages-from: when no response is usable (a base model whose answers never end, or "
                         "loop), write an empty file and exit 0 instead of failing")
    a = ap.parse_args(argv)

    from mtp.data import DataError
    from mtp.data.magpie import DEFAULT_OPENERS, MagpieConfig, self_written_prompts, write_prompts
    from mtp.models import load_model

    out = Path(a.out)
    settings = {"model": a.model, "num_prompts": a.num_prompts, "batch_size": a.batch_size,
                "max_new_tokens": a.max_new_tokens, "temperature": a.temperature, "top_p": a.top_p, "seed": a.seed,
                "dtype": a.dtype}
    openers = DEFAULT_OPENERS if a.openers == "default" else tuple(o.strip() for o in a.openers.split(",") if o.strip())
    if openers:
        settings["openers"] = list(openers)
    if a.passages_from:
        settings.update(passages_from=a.passages_from, questions=a.questions)
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
                       top_p=a.top_p, openers=openers)
    model, tok = load_model(a.model, dtype=a.dtype, device=a.device)
    t0 = time.perf_counter()
    if a.passages_from:
        from mtp.data import load_prompts
        from mtp.data.distill import load_distilled
        from mtp.data.passages import NoPassagesError, passage_prompts

        questions = load_prompts(a.questions) if a.questions else None
        try:
            prompts = passage_prompts(load_distilled(a.passages_from), tok, a.num_prompts, seed=a.seed,
                                      questions=questions)
        except NoPassagesError as e:
            if not a.allow_none:
                raise
            print(f"[prompts] {e}; writing no passage tasks (--allow-none)", file=sys.stderr)
            prompts = []
    else:
        prompts = self_written_prompts(model, tok, a.num_prompts, seed=a.seed, cfg=cfg, progress=not a.no_progress)
    meta = {"settings": settings, "kept": len(prompts), "seconds": round(time.perf_counter() - t0, 1)}
    write_prompts(prompts, out, meta)
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
