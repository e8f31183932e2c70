"""The CUDA kernel sources (plugins/src/cuda/*.cu), compiled with the host compiler against the
fiber emulation of plugins/src/cuda/emulation/emulation.h, against torch.ops.ssi.

This runs the kernels' real indexing, shared-memory tiling, barriers, compaction and WMMA tile
layout without a GPU (scripts/gpu_check.py's checks, small shapes). It needs the CUDA headers
and cudart_static (not nvcc); it is skipped where the CUDA toolkit is absent.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cuda_emu"


@pytest.fixture(scope="module")
def kernels():
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found")
    r = subprocess.run([cmake, "-S", str(REPO / "plugins"), "-B", str(BUILD), "-DSSI_BUILD_CUDA=OFF",
                        "-DSSI_BUILD_CUDA_EMULATION=ON", "-DSSI_BUILD_TENSORRT=OFF", "-DCMAKE_BUILD_TYPE=Release"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        if "CUDAToolkit" in r.stderr or "CUDA" in r.stderr:
            pytest.skip("CUDA toolkit headers not found: the kernel emulation is not built")
        pytest.fail(f"cmake configure failed: {r.stderr.strip().splitlines()[-1:]}")
    r = subprocess.run([cmake, "--build", str(BUILD), "--target", "ssi_cuda_emu", "-j2"], capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    gc = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gc
    spec.loader.exec_module(gc)
    return gc, gc.CudaKernels(BUILD / "lib" / "libssi_cuda_emu.so", emulated=True)


def _run(gc, fn, K, dtype, seed):
    gc.RESULTS["checks"].clear()
    gc.RESULTS["failures"].clear()
    fn(K, torch.Generator().manual_seed(seed), dtype, True)
    assert gc.RESULTS["checks"], "no check ran"
    assert not gc.RESULTS["failures"], gc.RESULTS["failures"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_sample_mask(kernels, dtype):
    gc, K = kernels
    _run(gc, gc.check_sample_mask, K, dtype, 11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_sparse_conv2d(kernels, dtype):
    gc, K = kernels
    _run(gc, gc.check_sparse_conv, K, dtype, 12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_gaussian_interp(kernels, dtype):
    gc, K = kernels
    _run(gc, gc.check_interp, K, dtype, 13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_bottleneck(kernels, dtype):
    gc, K = kernels
    gc.RESULTS["checks"].clear()
    gc.RESULTS["failures"].clear()
    gc.check_bottleneck(K, torch.Generator().manual_seed(14), dtype, graphs=False)
    assert gc.RESULTS["checks"] and not gc.RESULTS["failures"], gc.RESULTS["failures"]


def test_emulated_launch_rejects_bad_parameters(kernels):
    gc, K = kernels
    x = torch.randn(1, 4, 8, 8)
    w = torch.randn(4, 4, 3, 3)
    a = dict(stride_h=1, stride_w=1, pad_h=1, pad_w=1, dilation_h=1, dilation_w=1, groups=3, relu=0)
    with pytest.raises(RuntimeError, match="launchSparseConv2d returned"):
        K.sparse_conv2d(x, w, torch.zeros(4), torch.ones(1, 1, 8, 8), None, torch.empty(1, 4, 8, 8), a,
                        torch.empty(4096, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="launchSampleMask returned"):
        K.sample_mask(torch.zeros(1, 1, 4, 4), torch.empty(1, 1, 4, 4), 9, 11, 0, 0)
