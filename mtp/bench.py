"""The one benchmark runner: methods (mtp.methods: HF `generate`, the kit's loop, prompt lookup,
draft models, MTP heads, behind one interface) measured by the same code into one sample schema.

- `SuiteRun`: methods over a prompt suite into a results folder (mtp.results): warm-up, repeats,
  methods interleaved per prompt with their order rotated each repeat, multi-turn prompts, resume;
  `write_results` then writes the summary, plots and report.md.
The batch sweep (throughput vs interactivity) is mtp.sweep, the verify-cost timer mtp.costmodel.
Every script in `eval/` (and train.figures) is a thin consumer of these.
"""
from __future__ import annotations

import sys
import zlib
from pathlib import Path

import torch

from mtp import results
from mtp.methods import (  # noqa: F401  (re-exported: the runner's public names)
    METHOD_FORMS, HFMethod, KitMethod, Method, MethodSpecError, RunRecord, device_of, heads_fingerprint,
    make_method,
)
from mtp.suites import encode_turn


@torch.no_grad()
def logit_gap_at_divergence(model, prompt_ids: list[int], ids_a: list[int], ids_b: list[int]) -> tuple[int | None, float]:
    """First position where two continuations differ and the target's fp32 logit gap there
    (logit[a_i] - logit[b_i] given the common prefix): a near-zero gap means a near tie that
    reduced precision can flip. (None, 0.0) when one is a prefix of the other."""
    i = next((j for j, (a, b) in enumerate(zip(ids_a, ids_b)) if a != b), None)
    if i is None:
        return None, 0.0
    ids = torch.tensor([list(prompt_ids) + list(ids_a[:i])], device=device_of(model))
    logits = model(ids, logits_to_keep=1).logits[0, -1].float()
    return i, float(logits[ids_a[i]] - logits[ids_b[i]])


# ------------------------------------------------------------------------------------------------
# The runner: methods over a prompt suite into a results folder
# ------------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def rotated(methods: list, repeat: int) -> list:
    """The methods' order in a repeat: rotated by one each repeat, so no method always runs first."""
    r = repeat % len(methods)
    return methods[r:] + methods[:r]


def cell_seed(base: int, prompt_id: str, turn: int, repeat: int) -> int:
    """Every method gets the same seed for a cell; stable across runs (crc32, not hash())."""
    return (base * 1_000_003 + zlib.crc32(f"{prompt_id}/{turn}/{repeat}".encode())) % (2**31)


def context_method(names: list[str]) -> str:
    """Whose turn-i answers later turns carry: the kit's plain loop, else hf, else the first."""
    for m in ("vanilla", "hf"):
        if m in names:
            return m
    return names[0]


class SuiteRun:
    """Methods over suite items (mtp.data.Prompt) into `out`/samples.jsonl.

    Per item and turn, every repeat runs the methods interleaved, their order rotated each repeat,
    after `warmup` untimed runs of every method. Each finished (method, prompt, turn, repeat) cell
    is appended to samples.jsonl at once. Resume: cells already there that the same method
    (`method.key`: spec, plus the heads' weights) produced are skipped; those of a method whose key
    changed are dropped and run again. Turn i's prompt carries the context method's own (repeat 0)
    answers to the earlier turns. Exceptions (Ctrl-C too) propagate with `samples` kept; call
    `finalize` to write the summary, plots and report.md.
    """

    def __init__(self, out: str | Path, methods: list[Method], items: list, tokenizer, *, repeats: int = 3,
                 warmup: int = 1, max_new_tokens: int = 128, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int = 0) -> None:
        if not methods:
            raise ValueError("no methods to run")
        self.out, self.methods, self.items, self.tokenizer = Path(out), methods, items, tokenizer
        self.repeats, self.warmup, self.max_new_tokens, self.seed = repeats, warmup, max_new_tokens, seed
        self.gen = dict(temperature=temperature, top_k=top_k, top_p=top_p)
        self.context = context_method(self.names)
        self.samples_path = self.out / "samples.jsonl"
        self.out.mkdir(parents=True, exist_ok=True)
        self.samples = self._resume()
        self.done = {results.cell_key(s) for s in self.samples}
        self.prompts: dict[tuple[str, int], list[int]] = {}  # (prompt_id, turn) -> prompt ids
        self.todo = sum(len(it.turns) for it in items) * repeats * len(methods) - len(self.done)
        self.ran = 0

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.methods]

    @property
    def greedy(self) -> bool:
        return self.gen["temperature"] <= 0

    def _resume(self) -> list[dict]:
        results.repair_jsonl(self.samples_path)
        found = results.read_samples(self.samples_path)
        keys = {m.name: m.key for m in self.methods}
        stale = [s for s in found if s["method"] in keys and s.get("method_key") != keys[s["method"]]]
        if stale:
            _log(f"{len(stale)} cells of {sorted({s['method'] for s in stale})} were made by another spec or "
                 "other head weights: dropped, they run again")
            found = [s for s in found if s not in stale]
            results.atomic_write_text(self.samples_path, "".join(results.json_line(s) for s in found))
        return [s for s in found if s["method"] in keys]

    def run(self) -> list[dict]:
        """Run every cell not yet in the folder; returns all samples of these methods."""
        _log(f"{len(self.items)} prompts x {self.repeats} repeats x {len(self.methods)} methods; "
             f"{len(self.done)} cells done, {self.todo} to run -> {self.out}")
        if self.todo > 0 and self.items:
            warm = encode_turn(self.tokenizer, self.items[0], 0)
            for _ in range(self.warmup):
                for m in self.methods:
                    m.run(warm, max_new_tokens=min(16, self.max_new_tokens), seed=self.seed, **self.gen)
        for it in self.items:
            self._run_item(it)
        return self.samples

    def _run_item(self, it) -> None:
        answers: list[str] = []
        for t in range(len(it.turns)):
            pids = encode_turn(self.tokenizer, it, t, answers)
            self.prompts[(it.id, t)] = pids
            for r in range(self.repeats):
                for m in rotated(self.methods, r):
                    if (m.name, it.id, t, r) not in self.done:
                        self._run_cell(m, it, t, r, pids)
            if t + 1 < len(it.turns):  # later turns carry the context method's own answer
                prev = next(s for s in self.samples if results.cell_key(s) == (self.context, it.id, t, 0))
                answers.append(self.tokenizer.decode(prev["output_ids"], skip_special_tokens=True))

    def _run_cell(self, m: Method, it, turn: int, repeat: int, pids: list[int]) -> None:
        max_new = it.max_new_tokens or self.max_new_tokens
        rec = m.run(pids, max_new_tokens=max_new, seed=cell_seed(self.seed, it.id, turn, repeat), **self.gen)
        s = rec.as_sample(it.id, repeat, turn, it.category, method_key=m.key, length=it.length,
                          prompt_tokens=len(pids), max_new_tokens=max_new)
        results.append_jsonl(self.samples_path, s)
        self.samples.append(s)
        self.done.add(results.cell_key(s))
        self.ran += 1
        if self.ran % 20 == 0:
            _log(f"{self.ran}/{self.todo} cells")

    def finalize(self, model=None, *, plots: bool = True, baseline: str | None = None) -> dict:
        """summary.json/csv (greedy mismatches with the target's logit gap when `model` is given),
        plots and report.md; returns the summary."""
        return write_results(self.out, self.samples, self.names, greedy=self.greedy, model=model,
                             prompts=self.prompts, plots=plots, baseline=baseline)


def write_results(out: str | Path, samples: list[dict], names: list[str], *, greedy: bool, model=None,
                  prompts: dict | None = None, plots: bool = True, baseline: str | None = None) -> dict:
    """A results folder's summary.json/csv, plots and report.md from its samples; with `model` and
    `prompts` ({(prompt_id, turn): ids}) each greedy mismatch gets the target's logit gap at the
    first differing token. Returns the summary."""
    from mtp.report import write_report

    summary = results.summarize(samples, names, greedy=greedy, baseline=baseline)
    if greedy and summary["mismatches"] and model is not None and prompts:
        cells = {results.cell_key(s): s for s in samples}
        gaps = {}
        for mm in summary["mismatches"]:
            key = (mm["method"], mm["prompt_id"], mm["turn"], mm["repeat"])
            ref = cells.get((mm["baseline"], mm["prompt_id"], mm["turn"], mm["repeat"])) or \
                cells.get((mm["baseline"], mm["prompt_id"], mm["turn"], 0))
            pids = prompts.get((mm["prompt_id"], mm["turn"]))
            if ref is None or pids is None:
                continue
            pos, gap = logit_gap_at_divergence(model, pids, cells[key]["output_ids"], ref["output_ids"])
            gaps[key] = gap if pos is not None else None
        summary = results.summarize(samples, names, greedy=greedy, baseline=summary["baseline"], mismatch_gaps=gaps)
    results.write_summary(out, summary)
    if plots:
        from mtp.plots import write_plots

        write_plots(out)
    write_report(out)
    return summary
