# ssi-deploy: the two commands of the README, plus the native build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch that lies on this machine's disk; a CUDA build works the same.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test install plugins clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m ssi_deploy.demo

test: install
	$(PY) -m pytest -q

plugins:
	cmake -S plugins -B build/plugins -DCMAKE_BUILD_TYPE=Release
	cmake --build build/plugins -j2

clean:
	rm -rf build
