# Two commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export KERAS_BACKEND ?= tensorflow
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-fast lint bench fuzz install clean

# PyTorch for the backend tests, CPU only: a plain `pip install torch` pulls a multi-GB CUDA build.
# Where no CPU wheel is at hand: make TORCH_PIP="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP ?= torch==2.13.0

$(STAMP): pyproject.toml setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[tensorflow,jax,test,deploy,hub]"
	$(BIN)/python -m pip install --quiet $(TORCH_PIP)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ridurre demo --output demo_output

LINTED := ridurre tests bench example

test: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/python -m pytest -q -m "slow or not slow"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

bench: $(STAMP)
	$(BIN)/python bench/surgery.py

fuzz: $(STAMP)
	$(BIN)/python bench/fuzz_surgeon.py --examples 3000

clean:
	rm -rf $(VENV) demo_output build *.egg-info
