"""A small CNN that classifies one cell from a crop centred on it.

Input (N, 2, S, S): channel 0 is the frame's nuclear signal around the cell
(normalised per frame), channel 1 the cell's own mask (1 inside, 0 elsewhere,
so neighbours in the crop are told apart). Output (N, K): class probabilities
(softmax), K = ``n_classes``. The crop size S must be a multiple of 8.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CellStateNet"]


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CellStateNet(nn.Module):
    """Three stages of two convolutions and a 2x2 max pooling, a convolution, a linear head.

    The head reads the last convolution's channels averaged over the crop.
    """

    def __init__(self, n_classes: int = 5, base: int = 16, in_channels: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv(in_channels, base),
            _conv(base, base),
            nn.MaxPool2d(2),
            _conv(base, 2 * base),
            _conv(2 * base, 2 * base),
            nn.MaxPool2d(2),
            _conv(2 * base, 4 * base),
            _conv(4 * base, 4 * base),
            nn.MaxPool2d(2),
            _conv(4 * base, 4 * base),
        )
        self.head = nn.Linear(4 * base, n_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class scores (N, K), for training."""
        return self.head(self.features(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, K)."""
        return torch.softmax(self.logits(x), dim=1)
