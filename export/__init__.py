"""genrt.export: component specs, torch -> ONNX export with float32 islands, graph clean-up, manifests,
TensorRT / TensorRT-RTX engines and parity against PyTorch (see export/README.md)."""
