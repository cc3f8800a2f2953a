"""Mask R-CNN with a tiny backbone, trained on synthetic scenes (bug class 5).

torchvision's MaskRCNN (background, person, block, disc) with the tiny R-CNN parts of
models/keypoint_rcnn.py. The model takes `images` float32 (1, 3, H, W) in [0, 1] and
returns boxes (R, 4), scores (R,), labels (R,) and masks (R, H, W) in [0, 1], pasted
into the image by torchvision's own paste.

* `mask-rcnn`: one graph, dynamic H and W.
* `mask-rcnn-fixed`: the deployment bug class 5 started from, done right: a graph
  built for one size (160x160, static H and W in the graph). Other sizes must be
  refused with a clear message, never reported as a parity failure or a pass.
* `mask-rcnn-broken`: the graph claims dynamic H and W, but the deploy module takes the
  network's image size from its export configuration (160x160, Python ints) instead of
  from the input, as the Detectron2 TensorRT sample's fixed-size config did. That size
  clips the proposals and detections and sets the scale from network to input pixels,
  so at any other size boxes are clipped at 160 px and rescaled by (H/160, W/160):
  wrong or partial results that the export size and a 160x160 smoke test hide.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from deploy_parity.case import DeployTarget, InputSpec, ModelCase, OutputSpec, ZooEntry
from models.keypoint_rcnn import (
    BACKBONE_CHANNELS,
    BOX_REPRESENTATION,
    RCNN_JUDGING,
    RCNN_SIZES,
    WEIGHTS_DIR,
    backbone_features,
    load_trained,
    one_image_instances,
    rcnn_scene_feed,
    tiny_backbone,
    tiny_rcnn_options,
    unresized_transform,
)

WEIGHTS = WEIGHTS_DIR / "mask_rcnn.pt"
SEED = 20261123
NUM_CLASSES = 4  # background, person, block, disc (deploy_parity.scenes labels)
MASK_CHANNELS = 32


def build_detector() -> MaskRCNN:
    """The untrained torchvision MaskRCNN (seeded): what tools/train_rcnn.py trains."""
    torch.manual_seed(SEED)
    detector = MaskRCNN(
        tiny_backbone(),
        num_classes=None,  # given by the box predictor
        box_predictor=FastRCNNPredictor(BOX_REPRESENTATION, NUM_CLASSES),
        mask_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=2),
        mask_head=MaskRCNNHeads(BACKBONE_CHANNELS, [MASK_CHANNELS] * 3, dilation=1),
        mask_predictor=MaskRCNNPredictor(MASK_CHANNELS, MASK_CHANNELS, NUM_CLASSES),  # 28x28 per-ROI masks
        **tiny_rcnn_options(),
    )
    detector.transform = unresized_transform()
    return detector


def build_trained_detector() -> MaskRCNN:
    return load_trained(build_detector(), WEIGHTS)


class MaskRCNNReference(nn.Module):
    """torchvision's own eager inference, end to end, as a tuple of tensors."""

    def __init__(self, detector: MaskRCNN):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor):
        detections = self.detector(list(images))[0]
        return detections["boxes"], detections["scores"], detections["labels"], detections["masks"][:, 0]


class MaskRCNNDeploy(nn.Module):
    """The module that gets exported: torchvision's inference spelled out step by step
    (GeneralizedRCNN.forward without the training branch), so the network's image size
    can come either from the input (correct) or from a configured size (the bug)."""

    def __init__(self, detector: MaskRCNN, configured_image_size: Optional[tuple] = None):
        super().__init__()
        self.detector = detector
        self.configured_image_size = configured_image_size  # (height, width), or None

    def forward(self, images: torch.Tensor):
        detector = self.detector
        input_sizes = [(images.shape[-2], images.shape[-1])]
        image_list, features = backbone_features(detector, images)
        if self.configured_image_size is not None:
            # Bug class 5: Python ints from the export config replace the input's
            # traced size; the graph is still declared dynamic in H and W.
            image_list = ImageList(image_list.tensors, [self.configured_image_size])
        proposals, _ = detector.rpn(image_list, features)
        detections, _ = detector.roi_heads(features, proposals, image_list.image_sizes)
        # Scales boxes from network to input pixels and pastes the masks into the input.
        detections = detector.transform.postprocess(detections, image_list.image_sizes, input_sizes)[0]
        return detections["boxes"], detections["scores"], detections["labels"], detections["masks"][:, 0]


def reference_for(detector: MaskRCNN) -> MaskRCNNReference:
    return MaskRCNNReference(detector).eval()


def build_reference() -> MaskRCNNReference:
    return reference_for(build_trained_detector())


def deploy_builder(configured_image_size: Optional[tuple] = None):
    def build_deploy(target: DeployTarget) -> MaskRCNNDeploy:
        return MaskRCNNDeploy(build_trained_detector(), configured_image_size).eval()

    return build_deploy


INPUTS = (InputSpec("images", "image", ("float32",)),)
EXPORT_SIZE = (RCNN_SIZES.export_height, RCNN_SIZES.export_width)

CASE = ModelCase(
    name="mask-rcnn",
    description="Mask R-CNN (tiny backbone), masks pasted into the image, dynamic H and W (bug class 5)",
    build_reference=build_reference,
    build_deploy=deploy_builder(),
    inputs=INPUTS,
    outputs=(
        OutputSpec("boxes", "boxes", "(R, 4) x1 y1 x2 y2 in input pixels"),
        OutputSpec("scores", "scores", "(R,) class score"),
        OutputSpec("labels", "labels", "(R,) 1 person, 2 block, 3 disc"),
        OutputSpec("masks", "masks", "(R, H, W) soft masks in [0, 1], pasted into the image"),
    ),
    sizes=RCNN_SIZES,
    to_instances=one_image_instances("boxes", "scores", "labels", "masks"),
    max_batch=1,  # torchvision detection export takes one image
    spatial_binding="dynamic",
    judging=RCNN_JUDGING,
    make_feed=rcnn_scene_feed(INPUTS),
)

FIXED = replace(
    CASE,
    name="mask-rcnn-fixed",
    description=f"mask-rcnn as a graph for one size, {EXPORT_SIZE[0]}x{EXPORT_SIZE[1]} (static H and W); "
                "other sizes must be refused",
    spatial_binding="fixed",
)

BROKEN = replace(
    CASE,
    name="mask-rcnn-broken",
    description=f"mask-rcnn whose deploy module takes its image size from the export config "
                f"({EXPORT_SIZE[0]}x{EXPORT_SIZE[1]}) while the graph claims dynamic H and W",
    build_deploy=deploy_builder(configured_image_size=EXPORT_SIZE),
    zoo=ZooEntry(default=False),
)

CASES = [CASE, FIXED, BROKEN]
