# Set-up is idempotent: .venv is (re)built only when pyproject.toml or constraints.txt change.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.byol-installed
TEST_STAMP := $(VENV)/.byol-test-installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: demo test test-fast venv data bench bench-peers clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision pinned by constraints.txt (taken from local disk on the dev/CI machines)
	$(PY) -m pip install --quiet -c constraints.txt -e .
	@touch $(STAMP)

# The test tools (pytest, hypothesis, scikit-learn, onnx) only for `make test`: `make demo` does not wait for them.
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(TEST_STAMP)

# Fashion-MNIST from Debian (dataset-fashion-mnist): installed when we are root with apt; otherwise explained.
data:
	@if ls $(FMNIST_DIR)/train-images-idx3-ubyte.gz >/dev/null 2>&1; then \
	  echo "Fashion-MNIST: found in $(FMNIST_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Fashion-MNIST: installing the Debian package dataset-fashion-mnist"; \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) && \
	  echo "Fashion-MNIST: installed in $(FMNIST_DIR)"; \
	else \
	  echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or put the four IDX .gz files in a folder and run 'byol demo --data-dir FOLDER'."; \
	  exit 1; \
	fi

demo: venv data
	$(VENV)/bin/byol demo

# Without the data a developer gets the real-data tests skipped, said here and in pytest's summary; under
# BYOL_REQUIRE_REAL_DATA=1 (CI: .ci/run) a failed `make data` fails `make test`, and so would such a skip.
test: $(TEST_STAMP)
	@$(MAKE) --no-print-directory data || { \
	  if [ "$$BYOL_REQUIRE_REAL_DATA" = 1 ]; then \
	    echo "make test: BYOL_REQUIRE_REAL_DATA=1 and Fashion-MNIST could not be installed: the real-data tests cannot run" >&2; \
	    exit 1; \
	  fi; \
	  echo "(the slow tests on real Fashion-MNIST will be skipped; BYOL_REQUIRE_REAL_DATA=1 fails them instead)"; }
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/throughput.py

# Side by side with lightly, kornia and byol-pytorch, installed only into .venv-peers (never our dependencies).
bench-peers:
	bash benchmarks/setup_peers.sh
	.venv-peers/bin/python benchmarks/peers.py

clean:
	rm -rf $(VENV) .venv-peers .pytest_cache build src/*.egg-info
