"""Backends behind one interface (see ``base.Backend``): PyTorch, ONNX Runtime, TensorRT."""
