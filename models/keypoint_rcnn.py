"""Keypoint R-CNN with a tiny backbone, trained on synthetic scenes (bug class 4).

torchvision's KeypointRCNN (background + person, 17 COCO keypoints) with a small conv
backbone and small RPN / ROI settings, so it trains in minutes on a CPU
(tools/train_rcnn.py) and a parity suite runs in a few minutes.

The model takes `images` float32 (1, 3, H, W) in [0, 1] at any size and returns
boxes (R, 4), scores (R,), labels (R,), keypoints (R, 17, 3) = x, y, heatmap score,
and keypoint_peak_gap (R, 17): how far each keypoint's best heatmap cell beats the
second best, so a comparator can tell an argmax tie from a decoding error.

* The reference decodes heatmaps exactly as torchvision does in eager mode: a Python
  loop over ROIs with a bicubic resize to each ROI's size (models.rcnn_decoding).
* The deploy module (what gets exported, dynamic H and W) decodes with the loop-free
  exportable form of the same computation; it agrees up to float rounding, and where
  two heatmap cells are within rounding of each other argmax may pick either.
* The deploy module then clips the keypoints to the image, as deploy pipelines do: a
  no-op for keypoints decoded inside boxes that are already clipped.
* `keypoint-rcnn-broken` clips with the image size in (width, height) order where
  (height, width) belongs, the mix-up behind bug class 1. Square images (the square
  control, the export size) hide it; on a W > H image every keypoint right of x = H is
  pulled back to x = H (and below y = W on an H > W image).

The tiny R-CNN parts (backbone, no-resize transform, ROI settings, scene feed) are
shared with models/mask_rcnn.py.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from models import rcnn_decoding as decoding
from deploy_parity.case import DeployTarget, InputSpec, Judging, ModelCase, OutputSpec, SizeSpace, ZooEntry
from deploy_parity.compare.instances import Instances
from models.rcnn_decoding import clamp_to_image, decode_heatmaps_eager, decode_heatmaps_exportable
from deploy_parity.inputs import as_image_dtype
from deploy_parity.scenes.feeds import rendered_sample, sample_seed

WEIGHTS_DIR = Path(__file__).with_name("weights")
WEIGHTS = WEIGHTS_DIR / "keypoint_rcnn.pt"
SEED = 20261122
NUM_KEYPOINTS = 17

# ---------------------------------------------------------------- shared tiny R-CNN parts

BACKBONE_CHANNELS = 64
BOX_REPRESENTATION = 96  # box head width: small, so the weights stay under ~1.5 MB
IMAGE_MEAN = (0.45, 0.45, 0.45)
IMAGE_STD = (0.25, 0.25, 0.25)
# Few ROIs keep a CPU parity suite within minutes; a scene holds at most ~5 instances.
DETECTIONS_PER_IMAGE = 10
# Detections below this are dropped by the model. The comparator gets the same value,
# so an instance whose score sits within rounding of it may appear on one side only.
SCORE_THRESHOLD = 0.3
# torchvision's box_nms_thresh: overlapping detections of one label above this IoU are
# suppressed.
BOX_NMS_IOU = 0.5
# The comparator judges the cases with the model's own cuts: a detection near one of them
# may rightly appear on one side only.
RCNN_JUDGING = Judging(score_threshold=SCORE_THRESHOLD, topk=DETECTIONS_PER_IMAGE, nms_iou_threshold=BOX_NMS_IOU)
# Every size the harness may feed: small, to keep suites fast; rectangular up to 2:1.
RCNN_SIZES = SizeSpace(min_side=96, max_side=224, max_aspect=2.0, export_height=160, export_width=160)
# Share of feed seeds that render an empty scene: the zero-detection control. Kept far
# below the suite's 20% vacuous limit.
EMPTY_SCENE_EVERY = 12
EMPTY_SCENE_RESIDUE = 5  # seeds 0 and 1 (the square control, the export size) are not empty


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def tiny_backbone() -> nn.Module:
    """Stride-16 conv backbone, 64 channels out. The two dilated layers at the end widen
    the receptive field (~240 px) so a person filling a 224 px image is seen whole."""
    body = nn.Sequential(
        conv_bn_relu(3, 16, 2),
        conv_bn_relu(16, 32, 2),
        conv_bn_relu(32, 48, 2),
        conv_bn_relu(48, 48),
        conv_bn_relu(48, BACKBONE_CHANNELS, 2),
        conv_bn_relu(BACKBONE_CHANNELS, BACKBONE_CHANNELS, dilation=2),
        conv_bn_relu(BACKBONE_CHANNELS, BACKBONE_CHANNELS, dilation=4),
    )
    body.out_channels = BACKBONE_CHANNELS  # what torchvision's detection heads read
    return body


class UnresizedTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform without the resize: the harness feeds small
    images at their own size, and the graph stays free of a data-dependent Resize.
    Normalisation and padding to a multiple of 32 are torchvision's own."""

    def resize(self, image, target=None):
        return image, target


def tiny_rcnn_options() -> dict:
    """Constructor options shared by the keypoint and mask models: anchors for people
    30-90% of a 96-224 px image (tall) and blocks/discs, small RPN and ROI budgets."""
    return dict(
        rpn_anchor_generator=AnchorGenerator(sizes=((24, 48, 96, 192),), aspect_ratios=((0.5, 1.0, 2.0, 3.0),)),
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=150,
        rpn_post_nms_top_n_test=60,
        rpn_batch_size_per_image=128,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        box_head=FastRCNNConvFCHead((BACKBONE_CHANNELS, 7, 7), conv_layers=[16], fc_layers=[BOX_REPRESENTATION]),
        box_score_thresh=SCORE_THRESHOLD,
        box_nms_thresh=BOX_NMS_IOU,
        box_detections_per_img=DETECTIONS_PER_IMAGE,
        box_batch_size_per_image=64,  # ROI Align backward dominates a CPU training step
    )


def unresized_transform() -> UnresizedTransform:
    return UnresizedTransform(min_size=RCNN_SIZES.min_side, max_size=RCNN_SIZES.max_side,
                              image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD), size_divisible=32)


def load_trained(detector: nn.Module, weights: Path) -> nn.Module:
    """Load trained weights if present (an untrained model still runs: the suites then
    say the cases were vacuous instead of crashing)."""
    if weights.is_file():
        detector.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return detector.eval()


def backbone_features(detector, images: torch.Tensor):
    """torchvision's GeneralizedRCNN front half: (ImageList, {"0": features})."""
    image_list, _ = detector.transform(list(images))
    features = detector.backbone(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    return image_list, features


# And one seed in EMPTY_SCENE_EVERY renders a single person alone: the one-ROI control
# (bug class 4 hides at 0, 1 and many ROIs), whatever else Hypothesis happens to draw.
SINGLE_SCENE_RESIDUE = 8


def empty_scene(seed: int, index: int) -> bool:
    return sample_seed(seed, index) % EMPTY_SCENE_EVERY == EMPTY_SCENE_RESIDUE


def single_person_scene(seed: int, index: int) -> bool:
    return sample_seed(seed, index) % EMPTY_SCENE_EVERY == SINGLE_SCENE_RESIDUE


def rcnn_scene_feed(case_inputs, max_people: int = 3, max_objects: int = 2):
    """make_feed: scenes with 1..max_people people and 0..max_objects blocks/discs, and
    for 1 seed in EMPTY_SCENE_EVERY an empty scene (the zero-detection control), for
    another a single person alone (the one-detection control). Sample
    i is rendered from its own seed, so it is the same alone or in a batch."""

    def make_feed(height: int, width: int, batch: int, seed: int, dtypes) -> dict:
        images = []
        for i in range(batch):
            people, objects = (max_people, max_objects)
            if empty_scene(seed, i):
                people, objects = 0, 0
            elif single_person_scene(seed, i):
                people, objects = 1, 0
            scene = rendered_sample(height, width, seed, i, min(1, people), people, objects)
            images.append(scene.image.transpose(2, 0, 1))
        images = np.ascontiguousarray(np.stack(images))
        return {spec.name: as_image_dtype(images, dtype) for spec, dtype in zip(case_inputs, dtypes)}

    return make_feed


def one_image_instances(*fields: str):
    """to_instances for a tiny R-CNN's graph, whose outputs are named after the Instances
    fields they fill."""

    def to_instances(outputs: dict, index: int, image_size) -> Instances:
        # Batch 1: the outputs are one image's instances, with no batch axis.
        return Instances(**{name: outputs[name] for name in fields}, image_size=image_size)

    return to_instances


# ---------------------------------------------------------------- keypoint model


def build_detector() -> KeypointRCNN:
    """The untrained torchvision KeypointRCNN (seeded): what tools/train_rcnn.py trains."""
    torch.manual_seed(SEED)
    detector = KeypointRCNN(
        tiny_backbone(),
        num_classes=None,  # given by the box predictor: background, person
        keypoint_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=2),
        keypoint_head=KeypointRCNNHeads(BACKBONE_CHANNELS, [48, 48, 48]),
        # 14x14 ROI features -> 56x56 heatmaps, torchvision's default geometry.
        keypoint_predictor=KeypointRCNNPredictor(48, NUM_KEYPOINTS),
        box_predictor=FastRCNNPredictor(BOX_REPRESENTATION, 2),
        **tiny_rcnn_options(),
    )
    detector.transform = unresized_transform()
    return detector


class KeypointRCNNOutputs(nn.Module):
    """images (1, 3, H, W) -> (boxes, scores, labels, keypoints, keypoint_peak_gap).

    torchvision's own inference up to the keypoint heatmaps, then our decoder: the
    eager one for the reference; the exportable one, clipped to the image, for deployment.
    """

    def __init__(self, detector: KeypointRCNN, exportable_decoder: bool, clip_size_order: str = "hw"):
        super().__init__()
        self.detector = detector
        self.exportable_decoder = exportable_decoder
        self.clip_size_order = clip_size_order  # "hw" is right; "wh" is the broken variant

    def forward(self, images: torch.Tensor):
        detector = self.detector
        heads = detector.roi_heads
        image_list, features = backbone_features(detector, images)
        proposals, _ = detector.rpn(image_list, features)
        box_features = heads.box_head(heads.box_roi_pool(features, proposals, image_list.image_sizes))
        class_logits, box_regression = heads.box_predictor(box_features)
        boxes, scores, labels = heads.postprocess_detections(class_logits, box_regression, proposals,
                                                             image_list.image_sizes)
        keypoint_features = heads.keypoint_head(heads.keypoint_roi_pool(features, boxes, image_list.image_sizes))
        heatmaps = heads.keypoint_predictor(keypoint_features)
        # No resize happened, so the boxes are already in input pixels (torchvision's
        # postprocess would scale them by exactly 1).
        if not self.exportable_decoder:
            keypoints, gap = decode_heatmaps_eager(heatmaps, boxes[0])
            return boxes[0], scores[0], labels[0], keypoints, gap
        keypoints, gap = decode_heatmaps_exportable(heatmaps, boxes[0])
        # The input's traced size, never Python ints (they would freeze the export size).
        height, width = images.shape[-2], images.shape[-1]
        image_size = (height, width) if self.clip_size_order == "hw" else (width, height)
        return boxes[0], scores[0], labels[0], clamp_to_image(keypoints, image_size), gap


def build_trained_detector() -> KeypointRCNN:
    return load_trained(build_detector(), WEIGHTS)


def reference_for(detector: KeypointRCNN) -> KeypointRCNNOutputs:
    """The reference wrapper: torchvision's eager heatmap decoding."""
    return KeypointRCNNOutputs(detector, exportable_decoder=False).eval()


def build_reference() -> KeypointRCNNOutputs:
    return reference_for(build_trained_detector())


def deploy_builder(clip_size_order: str = "hw"):
    def build_deploy(target: DeployTarget) -> KeypointRCNNOutputs:
        return KeypointRCNNOutputs(build_trained_detector(), exportable_decoder=True,
                                   clip_size_order=clip_size_order).eval()

    return build_deploy


INPUTS = (InputSpec("images", "image", ("float32",)),)

CASE = ModelCase(
    name="keypoint-rcnn",
    description="Keypoint R-CNN (tiny backbone), heatmaps decoded by a loop-free exportable decoder (bug class 4)",
    build_reference=build_reference,
    build_deploy=deploy_builder(),
    inputs=INPUTS,
    outputs=(
        OutputSpec("boxes", "boxes", "(R, 4) x1 y1 x2 y2 in input pixels"),
        OutputSpec("scores", "scores", "(R,) person score"),
        OutputSpec("labels", "labels", "(R,) 1 = person"),
        OutputSpec("keypoints", "keypoints", "(R, 17, 3) x y heatmap score"),
        OutputSpec("keypoint_peak_gap", "keypoints", "(R, 17) best minus second-best heatmap cell"),
    ),
    sizes=RCNN_SIZES,
    to_instances=one_image_instances("boxes", "scores", "labels", "keypoints", "keypoint_peak_gap"),
    max_batch=1,  # torchvision detection export takes one image
    spatial_binding="dynamic",
    judging=RCNN_JUDGING,
    make_feed=rcnn_scene_feed(INPUTS),
    zoo=ZooEntry(source_files=(decoding.__file__,)),  # the decoder is functions, not modules: hash its file too
)

BROKEN = replace(
    CASE,
    name="keypoint-rcnn-broken",
    description="keypoint-rcnn whose exported decoder clips keypoints to the image size in (width, height) order",
    build_deploy=deploy_builder(clip_size_order="wh"),
    zoo=ZooEntry(default=False),
)

CASES = [CASE, BROKEN]
