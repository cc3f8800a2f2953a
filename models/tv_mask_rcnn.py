"""torchvision's MaskRCNN as it is: its own transform, heads, post-processing and mask paste.

The architecture and weights of models/mask_rcnn.py (tiny backbone; background,
person, block, disc; models/weights/mask_rcnn.pt) with none of that case's spelled-out
inference: torchvision's GeneralizedRCNNTransform (with `fixed_size` 160x160, see
models/tv_common.py), roi_heads and postprocess, which pastes the 28x28 ROI masks into
the input image ((R, 1, H, W) soft masks; an ONNX Loop when exported). Read by
deploy_parity.adapters.TorchvisionDetection.

* `tv-mask-rcnn`: the model as it is; the exported graph is dynamic in H and W.
* `tv-mask-rcnn-bgr`: a deploy wrapper that feeds the model BGR where it was trained on
  RGB (an OpenCV-loaded pipeline that forgot the swap): people and objects change
  colour, scores, boxes and masks move.
"""

from __future__ import annotations

from dataclasses import replace

from torchvision.models.detection import MaskRCNN

from deploy_parity.adapters.torchvision import TorchvisionDetection
from deploy_parity.case import DeployTarget, ModelCase, ZooEntry
from models import mask_rcnn
from models.keypoint_rcnn import DETECTIONS_PER_IMAGE, SCORE_THRESHOLD, load_trained
from models.tv_common import COMMON_SOURCES, FIXED_SIZE, INPUTS, SCENE_FEED, TV_SIZES, ChannelOrder, tv_transform

WEIGHTS = mask_rcnn.WEIGHTS  # the transform has no weights: the zoo's trained Mask R-CNN loads as it is


def build_detector(fixed_size=FIXED_SIZE) -> MaskRCNN:
    detector = mask_rcnn.build_detector()
    detector.transform = tv_transform(fixed_size)
    return load_trained(detector, WEIGHTS)


def build_reference() -> MaskRCNN:
    return build_detector()


def channel_builder(order: str):
    def build_deploy(target: DeployTarget) -> ChannelOrder:
        return ChannelOrder(build_detector(), order).eval()

    return build_deploy


CASE = ModelCase(
    name="tv-mask-rcnn",
    description="torchvision MaskRCNN as it is (own transform with fixed_size 160x160, heads, mask paste), "
                "tiny backbone",
    build_reference=build_reference,
    inputs=INPUTS,
    sizes=TV_SIZES,
    adapter=TorchvisionDetection(order="rcnn", masks=True, score_threshold=SCORE_THRESHOLD,
                                 topk=DETECTIONS_PER_IMAGE),
    max_batch=1,  # torchvision detection exports take one image
    spatial_binding="dynamic",
    make_feed=SCENE_FEED,
    zoo=ZooEntry(default=False, source_files=(__file__, *COMMON_SOURCES, mask_rcnn.__file__)),
)

BGR = replace(
    CASE,
    name="tv-mask-rcnn-bgr",
    description="tv-mask-rcnn behind a deploy wrapper that feeds it BGR (the model was trained on RGB)",
    build_deploy=channel_builder("bgr"),
)

CASES = [CASE, BGR]
