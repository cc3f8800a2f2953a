"""A detector whose float32 answers move by more than the fp32 table rows on rounding
alone, and its broken deploys: the noise-floor tests' models (tests/test_noise_floor.py).

NoisyDetector places every box relative to a large per-image offset and takes the
offset away again: (offset + x) - offset. In float32 the sum rounds to the spacing of
numbers near the offset (2^19 px: 0.0625 px spacing, so up to 0.03 px of error per
coordinate, three times the fp32 table's 0.01 px), in float64 it does not. That is what a deep head with large intermediate
values does to a correct export (a YOLO11 export moves corners 0.02 px, its own float32
vs float64 run 0.012-0.018 px), made large and certain on a model that runs in
milliseconds. A correct export of it must pass; a shifted, rescaled or BGR one must not.
"""

from __future__ import annotations

import torch
from torch import nn

from deploy_parity import InputSpec, ModelCase, SizeSpace
from deploy_parity.case import ZooEntry
from deploy_parity.adapters import MMDeployDetections

K = 6  # boxes per image
OFFSET = float(2 ** 19)  # px; float32 spacing there is 0.0625 px


class NoisyDetector(nn.Module):
    def __init__(self, shift_px: float = 0.0, conv_scale: float = 1.0, bgr: bool = False,
                 float32_only: bool = False, offset: float = OFFSET, regrouped: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)  # the mid-network conv a broken deploy scales
        self.head = nn.Linear(32, K * 4)
        with torch.no_grad():
            self.conv2.weight.mul_(conv_scale)
        self.shift_px, self.bgr, self.float32_only, self.offset = shift_px, bgr, float32_only, offset
        # The deploy module's own (equally correct) rounding: the same sums around an offset
        # twice as large (float32 spacing 0.125 px there), as a differently fused graph has
        # other intermediates and rounds differently.
        self.regroup = 2.0 if regrouped else 1.0

    def forward(self, images):
        if self.float32_only and images.dtype != torch.float32:
            raise TypeError(f"NoisyDetector(float32_only) takes float32 images, got {images.dtype}")
        if self.bgr:
            images = images.flip(1)
        features = torch.relu(self.conv2(torch.relu(self.conv(images))))
        raw = 4.0 * self.head(features.mean(dim=(2, 3))).reshape(-1, K, 4)
        height, width = images.shape[2], images.shape[3]
        # The per-image offset: large, and computed from the features like a real head's.
        offset = self.regroup * self.offset * (1.0 + 0.5 * torch.tanh(features.mean(dim=(1, 2, 3)))).reshape(-1, 1)
        cx = (offset + torch.sigmoid(raw[..., 0]) * width) - offset
        cy = (offset + torch.sigmoid(raw[..., 1]) * height) - offset
        w = 8.0 + torch.sigmoid(raw[..., 2]) * width * 0.5
        h = 8.0 + torch.sigmoid(raw[..., 3]) * height * 0.5
        # Scores spread well apart: no pair sits near a decision boundary.
        score = (0.3 + 0.1 * torch.arange(K, dtype=images.dtype)).expand_as(cx)
        x1 = cx - w / 2 + self.shift_px
        return torch.stack([x1, cy - h / 2, x1 + w, cy + h / 2, score], dim=-1)


def noisy_case(name: str = "noisy-det", **deploy) -> ModelCase:
    """The case: the reference is always the correct model; `deploy` breaks the deploy
    module (what torch-cpu runs and what gets exported)."""
    float32_only = deploy.pop("float32_only", False)
    offset = deploy.pop("offset", OFFSET)
    return ModelCase(
        name=name,
        description="a detector whose float32 rounding moves corners ~0.05 px (tests/noisy_cases.py)",
        build_reference=lambda: NoisyDetector(float32_only=float32_only, offset=offset).eval(),
        build_deploy=lambda target: NoisyDetector(float32_only=float32_only, offset=offset, regrouped=True,
                                                  **deploy).eval(),
        inputs=(InputSpec("images", "image", ("float32",)),),
        adapter=MMDeployDetections(dets="dets"),
        sizes=SizeSpace(min_side=32, max_side=128, max_aspect=3.0, export_height=64, export_width=96),
        max_batch=2,
        zoo=ZooEntry(default=True),
    )


CASES = [
    noisy_case(),
    noisy_case("noisy-det-shifted", shift_px=0.5),
    noisy_case("noisy-det-conv-scaled", conv_scale=1.05),
    noisy_case("noisy-det-bgr", bgr=True),
    # No offset (a quiet model) that refuses float64: its shadow cannot run.
    noisy_case("quiet-det-float32-only", float32_only=True, offset=0.0),
]
