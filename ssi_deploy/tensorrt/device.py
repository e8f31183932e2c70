"""Device buffers, a stream, events and CUDA graphs for running engines, from torch (a CUDA
build) or, without it, cuda-python (``cuda.bindings.runtime``, older ``cuda.cudart``)."""

from __future__ import annotations

import numpy as np

from ..errors import SSIError

INSTALL_HINT = ("install a CUDA build of torch or `pip install cuda-python`, or use the Docker "
                "image (docs/docker.md)")


def make_device(prefer: str | None = None):
    """A ``TorchDevice`` or ``CudaPythonDevice``; SSIError when neither can reach the GPU."""
    errors = []
    order = ("torch", "cuda-python") if prefer in (None, "torch") else ("cuda-python", "torch")
    for kind in order:
        try:
            return TorchDevice() if kind == "torch" else CudaPythonDevice()
        except _Unavailable as e:
            errors.append(f"{kind}: {e}")
    raise SSIError(f"no way to allocate GPU memory from Python ({'; '.join(errors)}): {INSTALL_HINT}")


class _Unavailable(Exception):
    pass


class TorchDevice:
    kind = "torch"

    def __init__(self):
        try:
            import torch
        except ImportError as e:
            raise _Unavailable("not installed") from e
        if not torch.cuda.is_available():
            raise _Unavailable(f"torch {torch.__version__} has no CUDA device")
        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.stream_handle = self.stream.cuda_stream

    def empty(self, shape, dtype: np.dtype):
        t = self.torch.empty(tuple(int(d) for d in shape),
                             dtype=self.torch.from_numpy(np.empty(0, dtype)).dtype, device="cuda")
        return t

    @staticmethod
    def ptr(buf) -> int:
        return int(buf.data_ptr())

    def upload(self, buf, arr: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            buf.copy_(self.torch.from_numpy(np.ascontiguousarray(arr)), non_blocking=False)

    def download(self, buf) -> np.ndarray:
        self.synchronize()
        return buf.cpu().numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def event(self):
        return self.torch.cuda.Event(enable_timing=True)

    def record(self, ev) -> None:
        ev.record(self.stream)

    def elapsed_ms(self, start, end) -> float:
        end.synchronize()
        return float(start.elapsed_time(end))

    def capture(self, launch):
        """Capture ``launch()`` (enqueues on our stream) into a graph; returns a replay function."""
        g = self.torch.cuda.CUDAGraph()
        self.synchronize()
        with self.torch.cuda.graph(g, stream=self.stream, capture_error_mode="thread_local"):
            launch()
        return g.replay


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise _Unavailable("not installed") from e
    return cudart


class CudaPythonDevice:
    kind = "cuda-python"

    def __init__(self):
        self.rt = _cudart()
        n = self._check(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount", unavailable=True)
        if not n:
            raise _Unavailable("no CUDA device")
        self.stream_handle = int(self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate"))
        self._stream = self.stream_handle
        self._allocs = []

    def _check(self, res, what, unavailable=False):
        err, *rest = res if isinstance(res, tuple) else (res,)
        if int(err) != 0:
            msg = f"{what} failed ({err})"
            if unavailable:
                raise _Unavailable(msg)
            raise SSIError(f"CUDA error: {msg}")
        return rest[0] if len(rest) == 1 else (rest or None)

    class _Buf:
        def __init__(self, ptr, shape, dtype):
            self.ptr, self.shape, self.dtype = ptr, tuple(shape), np.dtype(dtype)

        @property
        def nbytes(self):
            return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def empty(self, shape, dtype):
        b = self._Buf(0, shape, dtype)
        b.ptr = int(self._check(self.rt.cudaMalloc(max(b.nbytes, 1)), "cudaMalloc"))
        self._allocs.append(b.ptr)
        return b

    @staticmethod
    def ptr(buf) -> int:
        return buf.ptr

    def upload(self, buf, arr):
        arr = np.ascontiguousarray(arr, dtype=buf.dtype)
        self._check(self.rt.cudaMemcpyAsync(buf.ptr, arr.ctypes.data, arr.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                            self._stream), "cudaMemcpyAsync")
        self.synchronize()  # `arr` may go away after return

    def download(self, buf):
        out = np.empty(buf.shape, buf.dtype)
        self._check(self.rt.cudaMemcpyAsync(out.ctypes.data, buf.ptr, out.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                            self._stream), "cudaMemcpyAsync")
        self.synchronize()
        return out

    def synchronize(self):
        self._check(self.rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def event(self):
        return self._check(self.rt.cudaEventCreate(), "cudaEventCreate")

    def record(self, ev):
        self._check(self.rt.cudaEventRecord(ev, self._stream), "cudaEventRecord")

    def elapsed_ms(self, start, end):
        self._check(self.rt.cudaEventSynchronize(end), "cudaEventSynchronize")
        return float(self._check(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def capture(self, launch):
        rt = self.rt
        self.synchronize()
        self._check(rt.cudaStreamBeginCapture(
            self._stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
            "cudaStreamBeginCapture")
        try:
            launch()
        finally:
            graph = self._check(rt.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
        exe = self._check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

        def replay():
            self._check(rt.cudaGraphLaunch(exe, self._stream), "cudaGraphLaunch")
        return replay

    def close(self):
        for p in self._allocs:
            self.rt.cudaFree(p)
        self._allocs.clear()
