"""The built-in prompts the quick preset leaves out (train.distill --prompts builtin --shuffle
--num-prompts 320 trains on the first 320 of a seed-0 shuffle): written as a prompts JSONL, to be
answered greedily (train.distill) and read as a held-out set the heads never saw."""
import dataclasses
import json
import random
import sys

from mtp.data import load_prompts

prompts = load_prompts("builtin")
random.Random(0).shuffle(prompts)  # train.distill --shuffle --seed 0
left_out = prompts[320:]
with open(sys.argv[1], "w") as f:
    for p in left_out:
        f.write(json.dumps(dataclasses.asdict(p)) + "\n")
print(f"{len(left_out)} prompts -> {sys.argv[1]}", file=sys.stderr)
