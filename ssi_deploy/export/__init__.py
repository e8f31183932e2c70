"""ONNX export of SSI models: ``ssi``-domain nodes for the TensorRT plugins, model-local
function bodies of standard ONNX ops for ONNX Runtime, and metadata for validation.

    from ssi_deploy.export import export_onnx, read_metadata
    export_onnx(model, "m.onnx", input_shape=(1, 3, 512, 512), dynamic=("batch", "height", "width"))
    read_metadata("m.onnx")["sampling"]
"""

from .exporter import (DEFAULT_OPSET, DYNAMIC_AXES, INPUT_NAME, ExportError, VerifyError,
                       attach_functions, check_opset, export_onnx, read_metadata,
                       reference_evaluator, summarize, translation_table, verify_export)
from .functions import MAX_OPSET, MIN_OPSET, build_function, build_functions
from .schemas import register_schemas, schemas_registered

__all__ = [
    "DEFAULT_OPSET", "DYNAMIC_AXES", "INPUT_NAME", "MAX_OPSET", "MIN_OPSET", "ExportError",
    "VerifyError", "attach_functions", "build_function", "build_functions", "check_opset",
    "export_onnx", "read_metadata", "reference_evaluator", "register_schemas",
    "schemas_registered", "summarize", "translation_table", "verify_export",
]
