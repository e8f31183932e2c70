"""Serving exports with NVIDIA Triton Inference Server (docs/serving.md).

``repository``: ``ssi-deploy triton-repo`` writes a model repository from an engine (the
``tensorrt_plan`` platform, for NVIDIA's container) or an ONNX file (the python backend running
ONNX Runtime or the PyTorch sparse path, for CPUs). ``config_pbtxt``: the ``config.pbtxt``
writer, from the export manifest and the engine's build sidecar. ``python_model``: the
``model.py`` the python backend runs. ``server``: the Triton server bundled with the
``nvidia-pytriton`` wheel (``pip install -e '.[serve]'``), started and stopped by PID on
127.0.0.1. ``client``: requests with ``tritonclient`` and latency statistics.
"""
