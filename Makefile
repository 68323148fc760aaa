# `make demo`, `make test` and `make bench` do all set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel of torch: pip takes it from local disk here; on a CUDA machine keep your own build.
TORCH_CPU ?= torch==2.13.0

MODEL ?= smollm2-135m
PRESET ?= quick
# results folders behind the tables (make report): every run in docs/results/README.md; the headline
# runs in README.md (the best at T=0, every family, the quick preset, gemma3-270m, the depth study)
HEADLINE ?= results/scale18 results/fam19 results/fam16 results/fam14 results/demo20b results/demo21-gemma results/fam13-gemma results/gemma11 results/depth
RUNS ?= results/full2 results/depth results/fam results/fam-trees results/fam-pld results/fam-chat results/div results/union results/union-wide results/e3div2 results/adapt results/adapt-e3 results/adapt9 results/adapt9-24 results/demo-hq results/demo-r8both results/demo results/demo-gemma results/demo-gemma-hydra results/gemma9 results/gemma9-adapt results/gemma10 results/gemma11 results/adapt10 results/demo10 results/demo11 results/round11 results/demo11-fp32 results/fam12 results/fam12-ds results/fam13 results/fam13-gemma results/fam14 results/demo14 results/demo15 results/fam15 results/fam16 results/scale18 results/fam19 results/t1-19 results/demo20b results/demo21-gemma results/r21-chain results/r21-chain-gemma results/demo22 results/demo22b results/r22-bench results/r22-chain results/r22-chain-s1

.PHONY: setup demo test bench report clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	  else $(PY) -m pip install -q "$(TORCH_CPU)"; fi; fi
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

# Self-distil, train heads, measure them next to hf / vanilla / pld at T=0 and T=1 (~25 min on 2 CPU cores).
demo: setup
	$(PY) -m train.demo --model $(MODEL) --preset $(PRESET)

# The results tables, regenerated from the results folders.
report: setup
	$(PY) -m eval.report $(RUNS) --readme docs/results/README.md --docs docs/results --plot none
	$(PY) -m eval.report $(HEADLINE) --readme README.md --docs docs/results

bench: setup
	$(PY) -m eval.bench_foundation --model smollm2-135m --out results/foundation

clean:
	rm -rf $(VENV)
