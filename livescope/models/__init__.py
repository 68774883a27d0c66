"""Model definitions for livescope's engines (torch; needs the ``train`` extra).

Only the training and export scripts in ``tools/`` and the torch backend import
this package; the runtime runs the exported ONNX files.
"""

from ._cellstate import CellStateNet
from ._unet import NucleiUNet, StainUNet, UNet

__all__ = ["CellStateNet", "NucleiUNet", "StainUNet", "UNet"]
