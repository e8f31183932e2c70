"""The ``model.py`` of a CPU model repository, run by Triton's python backend.

``ssi-deploy triton-repo --onnx`` copies this file into ``<model>/1/model.py`` beside the ONNX
file. It imports numpy and onnxruntime only (``runtime: torch`` also imports ssi_deploy and
torch, the project's PyTorch sparse path), and reads everything else from the model's
``config.pbtxt``: the runtime, its thread count, the file names, and the input and output names
and types.

Batching: with ``max_batch_size > 0`` Triton's dynamic batcher hands ``execute`` several
requests at once; requests whose inputs have equal shapes (past the batch dimension) are
concatenated along the batch, run once, and the outputs are split back by each request's
batch size. A request that fails gets an error response; the others still get theirs.

Tensors: under numpy 1 with the backend's ``as_numpy`` / ``Tensor(name, ndarray)``; under
numpy 2 with DLPack (``np.from_dlpack`` / ``Tensor.from_dlpack``), since the python backend
of Triton 2.51 (the ``nvidia-pytriton`` wheel) answers empty outputs for ``Tensor(name,
ndarray)`` there (its stub predates numpy 2), and DLPack outputs break its stub under numpy 1.
"""

import json
import os

import numpy as np

try:  # present inside Triton's python backend stub only
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported by the tests and by ssi-deploy itself
    pb_utils = None

NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64}


def _param(config, key, default=None):
    p = config.get("parameters", {}).get(key)
    return p.get("string_value", default) if isinstance(p, dict) else default


class OnnxRuntimeRunner:
    def __init__(self, path, threads):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def run(self, names, feeds):
        return dict(zip(names, self.session.run(names, feeds)))


class TorchRunner:
    """The project's PyTorch sparse path (SSI ops skip work), rebuilt from the ONNX file's
    manifest and the checkpoint next to it (or the seeded random weights it records)."""

    def __init__(self, path, threads, checkpoint):
        # the native CPU kernels' OpenMP reads this when it starts (this stub is a fresh process)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        from ssi_deploy.backends.torch_backend import TorchBackend

        torch.set_num_threads(int(threads))
        self.backend = TorchBackend.from_onnx(path, checkpoint=checkpoint)

    def run(self, names, feeds):
        out = self.backend.run(feeds)
        return {n: out[n] for n in names}


def group_requests(shapes, batched):
    """Indices of requests that can run together: equal input shapes past the batch dim
    (every request alone when the model does not batch)."""
    if not batched:
        return [[i] for i in range(len(shapes))]
    groups = {}
    for i, s in enumerate(shapes):
        groups.setdefault(tuple(tuple(x[1:]) for x in s), []).append(i)
    return list(groups.values())


def run_grouped(runner, input_names, output_names, requests_feeds, batched):
    """Run every request's feeds ({name: array}); returns one {name: array} or exception per
    request, in order."""
    results = [None] * len(requests_feeds)
    shapes = [[f[n].shape for n in input_names] for f in requests_feeds]
    for group in group_requests(shapes, batched):
        try:
            if len(group) == 1:
                outs = runner.run(output_names, requests_feeds[group[0]])
                results[group[0]] = outs
                continue
            feeds = {n: np.concatenate([requests_feeds[i][n] for i in group], axis=0)
                     for n in input_names}
            outs = runner.run(output_names, feeds)
            start = 0
            for i in group:
                b = requests_feeds[i][input_names[0]].shape[0]
                results[i] = {n: np.ascontiguousarray(outs[n][start:start + b])
                              for n in output_names}
                start += b
            if start != next(iter(outs.values())).shape[0]:
                raise RuntimeError("the batched outputs do not add up to the requests' batches")
        except Exception as e:  # noqa: BLE001 - each request of the group gets the error
            for i in group:
                results[i] = e
    return results


# numpy 1: the backend's own conversions; numpy 2: DLPack (see the module's docstring)
_DLPACK = int(np.__version__.split(".")[0]) >= 2


def _to_numpy(tensor):
    return np.from_dlpack(tensor) if _DLPACK else tensor.as_numpy()


def _to_tensor(name, array):
    array = np.ascontiguousarray(array)
    return pb_utils.Tensor.from_dlpack(name, array) if _DLPACK else pb_utils.Tensor(name, array)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.input_names = [t["name"] for t in config["input"]]
        self.input_types = [NUMPY_TYPES[t["data_type"]] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        self.output_types = {t["name"]: NUMPY_TYPES[t["data_type"]] for t in config["output"]}
        self.batched = int(config.get("max_batch_size", 0)) > 0
        runtime = _param(config, "runtime", "onnxruntime")
        threads = int(_param(config, "threads", "1"))
        path = os.path.join(folder, _param(config, "model_file", "model.onnx"))
        if runtime == "onnxruntime":
            self.runner = OnnxRuntimeRunner(path, threads)
        elif runtime == "torch":
            ckpt = _param(config, "checkpoint", "")
            self.runner = TorchRunner(path, threads, os.path.join(folder, ckpt) if ckpt else None)
        else:
            raise ValueError(f"config.pbtxt parameter runtime={runtime!r}: expected onnxruntime "
                             "or torch")

    def execute(self, requests):
        feeds = []
        for r in requests:
            feeds.append({n: np.ascontiguousarray(
                _to_numpy(pb_utils.get_input_tensor_by_name(r, n)), dtype=t)
                for n, t in zip(self.input_names, self.input_types)})
        results = run_grouped(self.runner, self.input_names, self.output_names, feeds,
                              self.batched)
        responses = []
        for res in results:
            if isinstance(res, Exception):
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"{type(res).__name__}: {res}")))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                _to_tensor(n, res[n].astype(self.output_types[n], copy=False))
                for n in self.output_names]))
        return responses

    def finalize(self):
        self.runner = None
