"""Small U-Nets: nuclei segmentation (two sigmoid maps) and virtual staining (regression).

`NucleiUNet` outputs (N, 2, H, W), both through a sigmoid: channel 0 is
P(pixel in a nucleus), channel 1 is the distance to the nucleus border divided
by the nucleus' largest such distance (1 at centres, 0 at borders). Instances
come from seeds at high distance grown by a watershed inside the foreground
(`livescope.inference`). With ``offsets=True`` it adds two channels, the
vector (dy, dx) in pixels from each nucleus pixel to its nucleus' centre:
pixels then vote for centres, and each joins the centre it votes for.

`StainUNet` outputs (N, 1, H, W) with no activation: the predicted nuclear
fluorescence in the target's normalised units (its 1st/99.8th percentiles at
0/1), from ``in_channels`` label-free planes.

H and W must be multiples of 2**depth.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NucleiUNet", "StainUNet", "UNet"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` poolings and ``base`` channels at full resolution."""

    def __init__(
        self, base: int = 16, depth: int = 3, in_channels: int = 1, out_channels: int = 2
    ) -> None:
        super().__init__()
        self.depth = depth
        chans = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(in_channels, chans[0])] + [_block(chans[i], chans[i + 1]) for i in range(depth)]
        )
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            [
                nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                for i in reversed(range(depth))
            ]
        )
        self.dec = nn.ModuleList([_block(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs (before any activation), for training.

        Raises
        ------
        RuntimeError
            when H or W of ``x`` is not a multiple of ``2**depth`` (the kind of error
            torch raises for shapes, which the torch backend reports as such).

        """
        # (torch's own error comes from deep inside, a concatenation of 24 and 25 px; not
        # checked while tracing for ONNX, whose graph then keeps H and W free)
        if not torch.onnx.is_in_onnx_export():
            m = 2**self.depth
            h, w = x.shape[-2:]
            if h % m or w % m:
                raise RuntimeError(
                    f"{type(self).__name__} (depth {self.depth}) takes H and W in multiples of "
                    f"{m}, got {h}x{w}: pad the input (the engines pad each frame to their "
                    "card's input.multiple_of)"
                )
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs (subclasses add their activation)."""
        return self.logits(x)


class NucleiUNet(UNet):
    """Foreground probability and normalised distance to the border, (N, 2, H, W).

    With ``offsets=True`` two more channels, (N, 4, H, W): the vector from each
    pixel to the centre of its nucleus, (dy, dx) in pixels. With
    ``neighbours=True`` one more sigmoid channel, (N, 3, H, W): closeness to
    a touching neighbour (1 where a nucleus meets another, falling to 0 across
    it; 0 in nuclei that touch none).
    """

    OFFSET_SCALE_PX = 10.0  # raw offset outputs are in units of this many pixels

    def __init__(
        self, base: int = 16, depth: int = 3, in_channels: int = 1, offsets: bool = False,
        neighbours: bool = False,
    ) -> None:  # fmt: skip
        if offsets and neighbours:
            raise ValueError("NucleiUNet predicts centre offsets or neighbours, not both")
        super().__init__(base, depth, in_channels, out_channels=4 if offsets else 2 + neighbours)
        self.offsets = offsets
        self.neighbours = neighbours

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities in [0, 1], then (with offsets) the centre offsets in pixels."""
        out = self.logits(x)
        if not self.offsets:
            return torch.sigmoid(out)
        return torch.cat([torch.sigmoid(out[:, :2]), out[:, 2:] * self.OFFSET_SCALE_PX], dim=1)


class StainUNet(UNet):
    """Predicted nuclear fluorescence (N, 1, H, W) from label-free planes."""

    def __init__(self, base: int = 16, depth: int = 3, in_channels: int = 1) -> None:
        super().__init__(base, depth, in_channels, out_channels=1)
