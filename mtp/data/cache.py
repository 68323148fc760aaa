"""Hidden-state cache: the target's hidden states (the layers a head consumes) and its top-k logits,
computed once and memory-mapped, so head training need not rerun the target.

Layout of a cache folder:
    meta.json                          layers, dtype, top-k, fingerprint, example digest, shards
    shard-00000.h{layer}.bin           [tokens, H] hidden states (fp16 / bf16 / fp32, raw)
    shard-00000.topk_values.bin        [tokens, k] float32 target logits of the top-k tokens
    shard-00000.topk_indices.bin       [tokens, k] int32 their token ids
Examples are stored back to back in dataset order; example i of shard s starts at a fixed token
offset. The folder is built under a temporary name and renamed when complete.
Size per token: n_layers * H * bytes(dtype) + 8 * k bytes.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from mtp.data.dataset import Example, collate, examples_digest
from mtp.data.prompts import DataError

_NP = {"fp16": np.float16, "bf16": np.uint16, "fp32": np.float32}  # bf16 stored as raw uint16
_TORCH = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def normalize_layer(layer: int, num_layers: int) -> int:
    """HF output_hidden_states index (L+1 entries; -1 = last) -> non-negative index."""
    n = num_layers + 1
    if not -n <= layer < n:
        raise ValueError(f"hidden layer {layer} is out of range for a target with {num_layers} layers "
                         f"(output_hidden_states has {n} entries: valid indices {-n}..{n - 1})")
    return layer % n


def bytes_per_token(hidden_size: int, num_layers: int, dtype: str, topk: int) -> int:
    return num_layers * hidden_size * np.dtype(_NP[dtype]).itemsize + topk * 8


@torch.no_grad()
def build_cache(target, examples: list[Example], layers: list[int], out_dir: str | Path, *, dtype: str = "bf16",
                topk: int = 32, batch_size: int = 8, shard_tokens: int = 1 << 20, pad_id: int = 0,
                progress: bool = True) -> dict:
    """Run the target once over `examples` and store hidden states + top-k logits. Returns meta."""
    from mtp.models import model_fingerprint

    if dtype not in _NP:
        raise ValueError(f"cache dtype must be one of {sorted(_NP)}, got {dtype!r}")
    out_dir = Path(out_dir)
    L = int(target.config.num_hidden_layers)
    norm_layers = sorted({normalize_layer(x, L) for x in layers})
    H, V = int(target.config.hidden_size), int(target.config.vocab_size)
    topk = min(topk, V)
    check_replaceable(out_dir)
    lengths = [len(e.input_ids) for e in examples]
    # Plan shards: consecutive examples up to shard_tokens tokens each.
    shards, start, acc = [], 0, 0
    for i, n in enumerate(lengths):
        if acc and acc + n > shard_tokens:
            shards.append({"start": start, "end": i, "tokens": acc})
            start, acc = i, 0
        acc += n
    shards.append({"start": start, "end": len(lengths), "tokens": acc})
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    device = next(target.parameters()).device
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(lengths), desc="cache", unit="tok", unit_scale=True)
    for s, sh in enumerate(shards):
        pre = tmp / f"shard-{s:05d}"
        hs_maps = {l: np.memmap(f"{pre}.h{l}.bin", dtype=_NP[dtype], mode="w+", shape=(sh["tokens"], H))
                   for l in norm_layers}
        tv = np.memmap(f"{pre}.topk_values.bin", dtype=np.float32, mode="w+", shape=(sh["tokens"], topk))
        ti = np.memmap(f"{pre}.topk_indices.bin", dtype=np.int32, mode="w+", shape=(sh["tokens"], topk))
        off = 0
        for b in range(sh["start"], sh["end"], batch_size):
            idx = list(range(b, min(b + batch_size, sh["end"])))
            batch = collate([examples[i] for i in idx], pad_id)
            out = target(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                         output_hidden_states=True, use_cache=False)
            vals, inds = out.logits.float().topk(topk, dim=-1)
            for r, i in enumerate(idx):
                n = lengths[i]
                for l in norm_layers:
                    h = out.hidden_states[l][r, :n].to(_TORCH[dtype]).cpu()
                    hs_maps[l][off: off + n] = (h.view(torch.uint16) if dtype == "bf16" else h).numpy()
                tv[off: off + n] = vals[r, :n].cpu().numpy()
                ti[off: off + n] = inds[r, :n].to(torch.int32).cpu().numpy()
                off += n
            if bar is not None:
                bar.update(sum(lengths[i] for i in idx))
        for m in [*hs_maps.values(), tv, ti]:
            m.flush()
        del hs_maps, tv, ti
    if bar is not None:
        bar.close()
    meta = {"format": CACHE_FORMAT, "layers": norm_layers, "num_layers": L, "hidden_size": H,
            "vocab_size": V, "dtype": dtype, "topk": topk, "fingerprint": model_fingerprint(target),
            "model_dtype": str(next(target.parameters()).dtype).removeprefix("torch."),
            "model": str(target.config.name_or_path), "num_examples": len(examples), "lengths": lengths,
            "digest": examples_digest(examples), "shards": shards, "tokens": sum(lengths),
            "bytes_per_token": bytes_per_token(H, len(norm_layers), dtype, topk),
            "build_seconds": time.perf_counter() - t0}
    (tmp / "meta.json").write_text(json.dumps(meta))
    check_replaceable(out_dir)  # again: the folder may have changed while the cache was built
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    return meta


CACHE_FORMAT = "mtp-hidden-cache-v1"


def check_replaceable(out_dir: Path) -> None:
    """DataError unless out_dir is absent, empty, or a hidden-state cache this kit wrote (only those
    are ever replaced: pointing --out at a data or notes folder must not delete it)."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DataError(f"cache output {out_dir} exists and is not a folder; choose another --out")
    entries = list(out_dir.iterdir())
    if not entries:
        return
    meta = out_dir / "meta.json"
    fmt = None
    if meta.is_file():
        try:
            fmt = json.loads(meta.read_text()).get("format")
        except (json.JSONDecodeError, AttributeError, OSError):
            fmt = None
    allowed = all(e.name == "meta.json" or (e.name.startswith("shard-") and e.name.endswith(".bin")) for e in entries)
    if fmt != CACHE_FORMAT or not allowed:
        raise DataError(f"{out_dir} exists and is not a hidden-state cache written by the kit (it holds "
                        f"{', '.join(sorted(e.name for e in entries)[:5])}{' ...' if len(entries) > 5 else ''}); "
                        "refusing to replace it: choose another --out or delete it yourself")


def _memmap(path: str, dtype, rows: int, width: int) -> np.memmap:
    """A shard file read in place; DataError naming it when it is missing or shorter than meta.json says."""
    need = rows * width * np.dtype(dtype).itemsize
    try:
        size = Path(path).stat().st_size
    except OSError:
        raise DataError(f"cache shard {path} is missing; rebuild the cache with `python -m train.cache`") from None
    if size != need:
        raise DataError(f"cache shard {path} has {size} bytes, meta.json says {need} (truncated or from another "
                        "build); rebuild the cache with `python -m train.cache`")
    return np.memmap(path, dtype=dtype, mode="r", shape=(rows, width))


class HiddenStateCache:
    """Read side of a cache folder; `batch(indices, T)` gives padded tensors for the trainer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        mp = self.path / "meta.json"
        if not mp.is_file():
            raise DataError(f"{self.path} is not a hidden-state cache (no meta.json); build one with "
                            "`python -m train.cache --config <recipe>`")
        try:
            self.meta = json.loads(mp.read_text())
            m = self.meta
            self.layers, self.dtype, self.topk = list(m["layers"]), m["dtype"], int(m["topk"])
            self.lengths, shards, hidden = m["lengths"], list(m["shards"]), m["hidden_size"]
        except json.JSONDecodeError as e:
            raise DataError(f"{mp}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno}); rebuild the cache "
                            "with `python -m train.cache`") from None
        except (KeyError, TypeError) as e:
            raise DataError(f"{mp}: not a hidden-state cache's meta.json (missing or bad {e}); rebuild the "
                            "cache with `python -m train.cache`") from None
        self._loc: list[tuple[int, int]] = []  # example -> (shard, token offset)
        self._maps = []
        for s, sh in enumerate(shards):
            off = 0
            for i in range(sh["start"], sh["end"]):
                self._loc.append((s, off))
                off += self.lengths[i]
            pre = self.path / f"shard-{s:05d}"
            self._maps.append({
                "h": {l: _memmap(f"{pre}.h{l}.bin", _NP[self.dtype], sh["tokens"], hidden) for l in self.layers},
                "v": _memmap(f"{pre}.topk_values.bin", np.float32, sh["tokens"], self.topk),
                "i": _memmap(f"{pre}.topk_indices.bin", np.int32, sh["tokens"], self.topk),
            })

    def check(self, target, examples: list[Example], layers: list[int], need_topk: int) -> None:
        """Raise DataError unless this cache was built from this target, these examples and layers."""
        from mtp.models import model_fingerprint

        m = self.meta
        if m["fingerprint"] != model_fingerprint(target):
            raise DataError(f"cache {self.path} was built from another target model ({m['model']}, fingerprint "
                            f"{m['fingerprint']}); rebuild it for this one")
        if m["num_examples"] != len(examples) or m["digest"] != examples_digest(examples):
            raise DataError(f"cache {self.path} was built from other data ({m['num_examples']} examples, digest "
                            f"{m['digest']}) than this run's ({len(examples)}, {examples_digest(examples)}): "
                            "same data, max_seq_len and max_examples are needed; rebuild it")
        missing = sorted({normalize_layer(x, m["num_layers"]) for x in layers} - set(self.layers))
        if missing:
            raise DataError(f"cache {self.path} holds hidden layers {self.layers}; the head needs {missing} too")
        if need_topk > self.topk:
            raise DataError(f"cache {self.path} holds the target's top-{self.topk} logits; loss.kl_topk={need_topk}")

    def batch(self, indices: list[int], T: int, layers: list[int], device=None) -> dict:
        """{"hidden_states": {layer: [B, T, H]}, "topk_values": [B, T, k], "topk_indices": [B, T, k]},
        zero-padded past each example's length; keys of hidden_states are the `layers` asked for."""
        B, H, k = len(indices), self.meta["hidden_size"], self.topk
        n_layers = self.meta["num_layers"]
        hs = {l: torch.zeros(B, T, H, dtype=_TORCH[self.dtype]) for l in layers}
        tv = torch.zeros(B, T, k)
        ti = torch.zeros(B, T, k, dtype=torch.long)
        for r, i in enumerate(indices):
            s, off = self._loc[i]
            n = min(self.lengths[i], T)
            mp = self._maps[s]
            for l in layers:
                a = torch.from_numpy(np.array(mp["h"][normalize_layer(l, n_layers)][off: off + n]))
                hs[l][r, :n] = a.view(torch.bfloat16) if self.dtype == "bf16" else a
            tv[r, :n] = torch.from_numpy(np.array(mp["v"][off: off + n]))
            ti[r, :n] = torch.from_numpy(np.array(mp["i"][off: off + n])).long()
        if device is not None:
            hs = {l: h.to(device) for l, h in hs.items()}
            tv, ti = tv.to(device), ti.to(device)
        return {"hidden_states": hs, "topk_values": tv, "topk_indices": ti}

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.glob("*.bin"))


class CacheSet:
    """Several caches read as one, in order: training on `data.train="a,b"` with
    `data.cache="cache-a,cache-b"` (each cache built from its own part), so adding data to a run
    only needs a cache for the new part."""

    def __init__(self, parts: list[HiddenStateCache]) -> None:
        if not parts:
            raise DataError("empty list of hidden-state caches")
        first = parts[0].meta
        for c in parts[1:]:
            for key in ("fingerprint", "hidden_size", "num_layers", "dtype"):
                if c.meta[key] != first[key]:
                    raise DataError(f"caches {parts[0].path} and {c.path} differ in {key} ({first[key]} vs "
                                    f"{c.meta[key]}); build them with the same target and --dtype")
        self.parts = parts
        self.path = ",".join(str(c.path) for c in parts)
        self.meta = first
        self.layers = sorted(set.intersection(*(set(c.layers) for c in parts)))
        self.topk = min(c.topk for c in parts)
        self.lengths = [n for c in parts for n in c.lengths]
        self._part: list[tuple[int, int]] = [(j, i) for j, c in enumerate(parts) for i in range(len(c.lengths))]

    def check(self, target, examples: list[Example], layers: list[int], need_topk: int) -> None:
        if len(examples) != len(self._part):
            raise DataError(f"caches {self.path} hold {len(self._part)} examples, this run has {len(examples)}: "
                            "data.train and data.cache must list the same parts in the same order")
        off = 0
        for c in self.parts:
            n = len(c.lengths)
            c.check(target, examples[off: off + n], layers, need_topk)
            off += n

    def batch(self, indices: list[int], T: int, layers: list[int], device=None) -> dict:
        rows: list[dict] = [{} for _ in indices]
        for j, c in enumerate(self.parts):
            pos = [r for r, i in enumerate(indices) if self._part[i][0] == j]
            if not pos:
                continue
            b = c.batch([self._part[indices[r]][1] for r in pos], T, layers)
            for k, r in enumerate(pos):
                rows[r] = {"h": {l: h[k] for l, h in b["hidden_states"].items()},
                           "v": b["topk_values"][k, :, : self.topk], "i": b["topk_indices"][k, :, : self.topk]}
        out = {"hidden_states": {l: torch.stack([r["h"][l] for r in rows]) for l in layers},
               "topk_values": torch.stack([r["v"] for r in rows]), "topk_indices": torch.stack([r["i"] for r in rows])}
        if device is not None:
            out = {"hidden_states": {l: h.to(device) for l, h in out["hidden_states"].items()},
                   "topk_values": out["topk_values"].to(device), "topk_indices": out["topk_indices"].to(device)}
        return out

    def size_bytes(self) -> int:
        return sum(c.size_bytes() for c in self.parts)


def open_cache(spec: str | Path) -> HiddenStateCache | CacheSet:
    """One cache folder, or several joined by commas (read in order as one cache)."""
    parts = [x.strip() for x in str(spec).split(",") if x.strip()]
    if len(parts) == 1:
        return HiddenStateCache(parts[0])
    return CacheSet([HiddenStateCache(x) for x in parts])
