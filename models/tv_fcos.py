"""torchvision's FCOS as it is, with its default resize, on sizes that resize alike.

torchvision's FCOS class (its GeneralizedRCNNTransform, FCOSHead, box coder, NMS and
postprocess) on the zoo's tiny stride-16 backbone (models.keypoint_rcnn.tiny_backbone,
one feature level), background + person, block, disc, trained on the synthetic scenes
by tools/train_tv.py (models/weights/tv_fcos.pt). Read by
deploy_parity.adapters.TorchvisionDetection (boxes, scores, labels: FCOS's dict order).

* `tv-fcos`: the transform's default resize (min_size 128, max_size 256) on sides
  that are multiples of 8, for which eager (float64 scale) and the exported graph
  (float32) resize to the same size: models/tv_common.py says why the other sides
  differ; tests/test_zoo_torchvision.py checks every declared size.
* `tv-fcos-fixed-export`: the case as declared (dynamic sizes 96-224), but the graph
  is the user's own `onnx_path`: what torch.onnx.export(model, (sample,), ...) gives
  without dynamic_axes, fixed at 1x3x160x160 (exported into the cache on first use).
  The coverage verdict must fail at the start, naming both sides and the fix, instead
  of quietly testing the one size the graph takes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead

from deploy_parity.adapters.torchvision import TorchvisionDetection
from deploy_parity.case import ModelCase, SizeSpace, ZooEntry
from models.keypoint_rcnn import BACKBONE_CHANNELS, IMAGE_MEAN, IMAGE_STD, load_trained, tiny_backbone
from models.tv_common import COMMON_SOURCES, INPUTS, MAX_SIZE, MIN_SIZE, SCENE_FEED, ExportedOnFirstUse

WEIGHTS = Path(__file__).with_name("weights") / "tv_fcos.pt"
SEED = 20261124
NUM_CLASSES = 4  # background, person, block, disc (deploy_parity.scenes labels); label 0 is never predicted
SCORE_THRESHOLD = 0.3  # on sqrt(class probability x centerness), FCOS's own detection score
DETECTIONS_PER_IMAGE = 10  # a scene holds at most ~5 instances
TOPK_CANDIDATES = 100  # per level, before NMS (one level here)
# Multiples of 8 only: every such size in 96-224 (aspect <= 2) resizes to the same size
# eager and exported (models/tv_common.py).
FCOS_SIZES = SizeSpace(min_side=96, max_side=224, multiple_of=8, max_aspect=2.0, export_height=160,
                       export_width=160)


def build_detector() -> FCOS:
    """The untrained torchvision FCOS (seeded): what tools/train_tv.py trains."""
    torch.manual_seed(SEED)
    return FCOS(
        tiny_backbone(),
        NUM_CLASSES,
        min_size=MIN_SIZE,
        max_size=MAX_SIZE,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        # One level at stride 16; FCOS reads an anchor as a grid point whose size (the
        # stride, as torchvision's own FCOS sizes them) scales the box regression.
        anchor_generator=AnchorGenerator(sizes=((16,),), aspect_ratios=((1.0,),)),
        head=FCOSHead(BACKBONE_CHANNELS, num_anchors=1, num_classes=NUM_CLASSES, num_convs=2),
        score_thresh=SCORE_THRESHOLD,
        nms_thresh=0.5,
        detections_per_img=DETECTIONS_PER_IMAGE,
        topk_candidates=TOPK_CANDIDATES,
    )


def build_reference() -> FCOS:
    return load_trained(build_detector(), WEIGHTS)


ADAPTER = TorchvisionDetection(order="single-stage", score_threshold=SCORE_THRESHOLD, topk=DETECTIONS_PER_IMAGE)

CASE = ModelCase(
    name="tv-fcos",
    description="torchvision FCOS as it is (own transform, default resize min 128 / max 256, head, NMS), tiny "
                "backbone; sides multiples of 8",
    build_reference=build_reference,
    inputs=INPUTS,
    sizes=FCOS_SIZES,
    adapter=ADAPTER,
    max_batch=1,  # torchvision detection exports take one image
    spatial_binding="dynamic",
    make_feed=SCENE_FEED,
    zoo=ZooEntry(default=False, source_files=(__file__, *COMMON_SOURCES)),
)

FIXED_EXPORT = replace(
    CASE,
    name="tv-fcos-fixed-export",
    description="tv-fcos with the user's own graph: torch.onnx.export without dynamic_axes, fixed at 1x3x160x160, "
                "for a case that declares sides 96-224",
    # A function: the graph is exported when the harness first opens it, not at import.
    onnx_path=ExportedOnFirstUse("tv-fcos-fixed-export", build_reference, ADAPTER.output_names,
                                 FCOS_SIZES.export_height, FCOS_SIZES.export_width, source_files=CASE.source_files),
)

CASES = [CASE, FIXED_EXPORT]
