# ssi-deploy with the full TensorRT (builder, ONNX parser, runtime) and the SSI plugin library
# built against this image's own TensorRT headers.
#
#   docker build -t ssi-deploy .
#   docker run --rm --gpus all -v "$PWD/work:/work" ssi-deploy doctor
#
# Base: NVIDIA's TensorRT container 25.11 (TensorRT 10.14, CUDA 13.0, Ubuntu 24.04,
# Python 3.12; needs an NVIDIA driver that supports CUDA 13, R580 or newer).
# Build arguments: CUDA_ARCHS (CMake CUDA architectures, e.g. "90" for an H100 only;
# default: the plugins' own list).
FROM nvcr.io/nvidia/tensorrt:25.11-py3

ARG CUDA_ARCHS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# CMake >= 3.24 for the plugin build (the image has the CUDA toolkit and TensorRT headers).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ssi-deploy
COPY pyproject.toml README.md ./
COPY plugins ./plugins
# the package, with its package data: the model zoo (ssi_deploy/zoo/*.toml) and, after the
# plugin build below, ssi_deploy/lib/libssi_trt_plugins.so
COPY ssi_deploy ./ssi_deploy

# The plugin library, installed into the package (ssi_deploy/lib/libssi_trt_plugins.so).
RUN cmake -S plugins -B build/plugins -DCMAKE_BUILD_TYPE=Release \
        -DTRT_INCLUDE_DIR=/usr/include/x86_64-linux-gnu \
        -DSSI_PYTHON_LIB_DIR=/opt/ssi-deploy/ssi_deploy/lib \
        ${CUDA_ARCHS:+-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS}} \
 && cmake --build build/plugins -j"$(nproc)" \
 && cmake --install build/plugins \
 && test -f ssi_deploy/lib/libssi_trt_plugins.so -a -f ssi_deploy/lib/libssi_trt_autoregister.so \
 && rm -rf build

# The TensorRT Python bindings of the image (installed already in NGC images; the wheel in
# /opt/tensorrt/python otherwise), then ssi-deploy with its dependencies (torch, OpenCV from
# PyPI). The checks run the installed package (python3 -P: not the sources in the working
# directory), so `ssi-deploy zoo` proves the model zoo was installed as package data.
RUN python3 -c "import tensorrt" 2>/dev/null \
    || python3 -m pip install /opt/tensorrt/python/tensorrt-*-cp3"$(python3 -c 'import sys; print(sys.version_info[1])')"-*.whl \
 && python3 -m pip install . \
 && python3 -P -c "import tensorrt, cv2, ssi_deploy; print('TensorRT', tensorrt.__version__)" \
 && ssi-deploy build --help > /dev/null \
 && ssi-deploy zoo > /dev/null

WORKDIR /work
ENTRYPOINT ["ssi-deploy"]
CMD ["--help"]
