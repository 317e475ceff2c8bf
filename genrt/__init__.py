"""genrt: export generative image models to ONNX / TensorRT and run them without torch.

The distribution is three layers with one direction of dependency:
``genrt.sdk`` (PyTorch models) <- ``genrt.export`` (ONNX, engines); ``genrt.runtime``
reads what export wrote and never imports torch.
"""

__version__ = "0.1.0"
