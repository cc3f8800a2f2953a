"""Planted bugs in the architectures outside the zoo (tools/validation/unseen_cases.py):
the noise floor must not let them pass. Each case's reference is the correct model; its
deploy module (what torch-cpu runs and what is exported) carries one change:

  unseen-yolo11-detect-shifted        every box +0.5 px in x (a half-pixel convention error)
  unseen-yolo11-detect-conv-scaled    a mid-network conv's weights x 1.05 (model.model[4], a C3k2 block)
  unseen-yolo11-detect-bgr            the image fed BGR to a model that wants RGB
  unseen-tv-retinanet-r50-conv-scaled backbone.body.layer2[1].conv2 weights x 1.05
  unseen-tv-ssdlite-bgr               the image fed BGR

Not part of CI. Run, one case at a time:

    pytest suites --model-module tools/validation/unseen_planted.py --model unseen-yolo11-detect-bgr \\
        --hypothesis-profile ci --no-html-report
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from deploy_parity.case import DeployTarget, ZooEntry
from models.yolo_common import export_form
from tools.validation import unseen_cases as unseen

SOURCES = (*unseen.SOURCES, __file__)


class Planted(nn.Module):
    """The correct deploy module with one planted change around it."""

    def __init__(self, inner: nn.Module, bgr: bool = False, shift_x: float = 0.0):
        super().__init__()
        self.inner, self.bgr, self.shift_x = inner, bgr, shift_x

    def forward(self, images):
        out = self.inner(images.flip(1) if self.bgr else images)
        if self.shift_x:  # Ultralytics' export output: (B, 4 + classes, anchors), boxes cx cy w h first
            out = torch.cat([out[:, :1] + self.shift_x, out[:, 1:]], dim=1)
        return out


def scaled(model: nn.Module, path: str, factor: float = 1.05) -> nn.Module:
    """A copy of `model` whose conv at `path` (a dotted attribute path) has its weights x factor."""
    model = copy.deepcopy(model)
    layer = model
    for part in path.split("."):
        layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
    with torch.no_grad():
        layer.weight.mul_(factor)
    return model


def yolo_planted(name: str, **change):
    reference = unseen.YOLO11_DETECT.build_reference
    conv = change.pop("conv", None)

    def build_deploy(target: DeployTarget):
        model = reference() if conv is None else scaled(reference(), conv)
        return Planted(export_form(model, dynamic=target.height is None), **change)

    return replace(unseen.YOLO11_DETECT, name=name, build_deploy=build_deploy,
                   description=f"unseen-yolo11-detect with a planted bug: {name.removeprefix('unseen-yolo11-detect-')}",
                   zoo=ZooEntry(default=True, source_files=SOURCES))


def tv_planted(case, name: str, conv: str = None, bgr: bool = False):
    reference = case.build_reference

    def build_deploy(target: DeployTarget):
        model = reference() if conv is None else scaled(reference(), conv)
        return Planted(model, bgr=bgr) if bgr else model

    return replace(case, name=name, build_deploy=build_deploy,
                   description=f"{case.name} with a planted bug", zoo=ZooEntry(default=True, source_files=SOURCES))


CASES = [
    yolo_planted("unseen-yolo11-detect-shifted", shift_x=0.5),
    yolo_planted("unseen-yolo11-detect-conv-scaled", conv="model.4.cv1.conv"),
    yolo_planted("unseen-yolo11-detect-bgr", bgr=True),
    tv_planted(unseen.TV_RETINANET, "unseen-tv-retinanet-r50-conv-scaled", conv="backbone.body.layer2.1.conv2"),
    tv_planted(unseen.TV_SSDLITE, "unseen-tv-ssdlite-bgr", bgr=True),
]
