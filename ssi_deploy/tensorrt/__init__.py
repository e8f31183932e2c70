"""TensorRT engines for SSI models: plugin library discovery, ONNX preparation, engine build
with a plugin-layer check, shape profiles and engine inspection.

Everything that needs the ``tensorrt`` module imports it through ``ssi_deploy.tensorrt.trt``
(``import_tensorrt``), so that the rest of the package, ``--help`` and the tests work without it.
"""
