"""livescope: a microscope-side real-time acquisition controller.

Importing this package is cheap and has no side effects: subpackages
(`livescope.schema`, `livescope.record`, `livescope.scope`, `livescope.cli`) load
their dependencies only when imported, and heavy runtimes (torch, TensorRT, ONNX
Runtime, napari, dask) load only inside the code that needs them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
