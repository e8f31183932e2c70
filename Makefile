# ssi-deploy: the two commands of the README, plus the native build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch that lies on this machine's disk; a CUDA build works the same.
TORCH_SPEC ?= torch==2.13.0
# pytest workers (pytest-xdist): the suite on 2 cores takes ~15 min with 2, ~26 min serially.
# `make test TEST_JOBS=0` runs it in one process.
TEST_JOBS ?= 2

.PHONY: demo test install plugins plugins-test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,serve]" || { echo "install: the serve extra (nvidia-pytriton: Linux x86_64, glibc >= 2.35) does not install here; the serving tests will skip"; $(PY) -m pip install -q -e ".[dev]"; }
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m ssi_deploy.demo

# --dist loadfile: a file's tests stay in one worker, in order (a doc's commands build on each
# other; module fixtures such as exports are made once).
test: install
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

# CUDA kernels, CPU twins and, when TensorRT headers are found (TRT_INCLUDE_DIR or the usual
# places), the TensorRT plugin library, installed into ssi_deploy/lib/. Default GPUs: sm_75..90
# plus PTX; `make plugins CUDA_ARCHS=90` builds for one GPU only (faster).
CUDA_ARCHS ?=
plugins:
	cmake -S plugins -B build/plugins -DCMAKE_BUILD_TYPE=Release $(if $(CUDA_ARCHS),"-DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCHS)")
	cmake --build build/plugins -j2
	cmake --install build/plugins

# The TensorRT adapter's host harness (CTest) and the lean-runtime registry test.
plugins-test: plugins install
	@if [ -d build/plugins/src/tensorrt ]; then \
	  ctest --test-dir build/plugins --output-on-failure && \
	  $(PY) -m pip install -q -e ".[tensorrt]" && \
	  $(PY) -m pytest -q tests/test_trt_plugins.py tests/test_tensorrt.py; \
	else echo "plugins-test: no TensorRT headers found, the adapter was not built (set TRT_INCLUDE_DIR)"; fi

clean:
	rm -rf build
