# Everything runs from a local virtual environment (.venv) that the first target creates.
# PyTorch: the CPU wheel is installed first with pip (a bare `torch` requirement pulls a multi-GB CUDA build);
# override with `make TORCH="torch==2.x.y" ...` where that wheel is not available. The rest with uv, torch named in the
# same command so that it keeps pip's wheel: it resolves and installs the extras in about 20 s here, pip in 4 to 7 min.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
SEED ?= 0
# pytest workers (the learning tests dominate; two cores -> two workers)
WORKERS ?= 2
# the networks are tiny: one torch thread per process is faster than oversubscribed cores
export OMP_NUM_THREADS ?= 1

.PHONY: install test test-fast demo lint format type docs benchmark-overhead clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[zoo,mujoco,tests,benchmarks,docs,ray]" "$(TORCH)"
	touch $(STAMP)

install: $(STAMP)

## The test suite (the command CI runs): unit tests plus the learning tests marked slow
test: $(STAMP)
	$(PY) -m pytest -n $(WORKERS) --maxschedchunk 1 -p no:cacheprovider

## Unit tests only: no learning checks, no subprocesses (rl-zoo3 commands, benchmark scripts)
test-fast: $(STAMP)
	$(PY) -m pytest -n $(WORKERS) --maxschedchunk 1 -p no:cacheprovider -m "not slow and not integration"

## Train PPOKL on CartPole-v1 with the unchanged rl-zoo3 command and say where everything is
demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	cd $(DEMO_DIR) && ../$(PY) -m rl_zoo3.train --algo ppo_kl --env CartPole-v1 --seed $(SEED) -f logs -tb logs/tensorboard
	@run=$$(ls -d $(DEMO_DIR)/logs/ppo_kl/CartPole-v1_* | sort -V | tail -n 1); \
	echo ""; \
	echo "model:        $$run/CartPole-v1.zip (best: $$run/best_model.zip)"; \
	echo "hyperparams:  $$run/CartPole-v1/config.yml"; \
	echo "monitor logs: $$run/*.monitor.csv"; \
	echo "tensorboard:  $(DEMO_DIR)/logs/tensorboard (tensorboard --logdir $(DEMO_DIR)/logs/tensorboard)"; \
	$(PY) -c "import numpy as np, sys; r = np.load(sys.argv[1] + '/evaluations.npz'); \
	print(f'evaluation:   {sys.argv[1]}/evaluations.npz, last mean return {r[\"results\"][-1].mean():.1f} at step {r[\"timesteps\"][-1]}')" $$run; \
	echo "watch it:     cd $(DEMO_DIR) && ../$(PY) -m rl_zoo3.enjoy --algo ppo_kl --env CartPole-v1 -f logs/"

lint: $(STAMP)
	$(VENV)/bin/ruff check sb3_ppo_variants tests zoo_hook benchmarks docs/conf.py
	$(VENV)/bin/ruff format --check sb3_ppo_variants tests zoo_hook benchmarks docs/conf.py

format: $(STAMP)
	$(VENV)/bin/ruff format sb3_ppo_variants tests zoo_hook benchmarks docs/conf.py
	$(VENV)/bin/ruff check --fix sb3_ppo_variants tests zoo_hook benchmarks docs/conf.py

type: $(STAMP)
	$(VENV)/bin/mypy

## The documentation site (docs/_build/html) with warnings as errors, then its code examples as doctests
## (both builders share the parsed pages in docs/_build/doctrees; nothing is downloaded)
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -q -W --keep-going -d docs/_build/doctrees -b html docs docs/_build/html
	$(VENV)/bin/sphinx-build -q -W --keep-going -d docs/_build/doctrees -b doctest docs docs/_build/doctest

benchmark-overhead: $(STAMP)
	$(PY) -m benchmarks.overhead

clean:
	rm -rf $(VENV) $(DEMO_DIR) build dist *.egg-info docs/_build
