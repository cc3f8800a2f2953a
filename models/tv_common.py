"""torchvision's own detectors in the zoo: the shared parts of tv-keypoint-rcnn,
tv-mask-rcnn and tv-fcos, and why their passing cases resize the way they do.

The tv-* cases run torchvision's detection classes as they are: KeypointRCNN, MaskRCNN
and FCOS with torchvision's own GeneralizedRCNNTransform (normalise, resize, pad to a
multiple of 32), heads and post-processing (box decoding, NMS, keypoint heatmap
decoding, mask pasting, scaling back to the input), exported by the harness's
TorchScript exporter with dynamic H and W, read by deploy_parity.adapters'
TorchvisionDetection. Only the backbone is small (models.keypoint_rcnn.tiny_backbone);
the R-CNN weights are the zoo's models/weights/keypoint_rcnn.pt and mask_rcnn.pt (the
transform has no weights), FCOS's are models/weights/tv_fcos.pt (tools/train_tv.py).

A TRUE eager / export difference in torchvision's transform
-----------------------------------------------------------
With its default resize (shorter side to min_size, longer side at most max_size) the
transform computes the scale as a Python float (float64) in eager mode, but in float32
when traced: the exported graph computes floor(side * scale) in float32. side * scale
is min_size up to rounding, and for a shorter side of 97, 98, 103, 109, 110, 115, ...
141, ... 220 px (min_size 128, max_size 256: 26 of the 129 sides in 96..224, 3148 of
the 16097 sizes of aspect <= 2) the two roundings fall on either side of 128: one
resizes to 128, the other to 127 (97 px: eager 128, export 127; 98 px: eager 127,
export 128). The network then sees a different image, and boxes scaled back by the
different ratio move (by tens of pixels where a detection changes: 42 px seen). That
is a real deployment difference of torchvision's export, not rounding:
tv-keypoint-rcnn-default-resize keeps the default resize and the suite reports it as a
failure, shrunk to such a size.

The passing cases avoid it the legitimate ways the transform and the size space offer:

* tv-keypoint-rcnn and tv-mask-rcnn use the transform's own `fixed_size` option:
  every input is resized to one network size (FIXED_SIZE, 160x160), whatever its own
  size, so eager and traced resize to the same size by construction; postprocess maps
  boxes, keypoints and masks back to the input by ratios it computes in float32 in both
  modes. The inputs still range over every size and aspect of TV_SIZES (96-224 px, odd
  sides included): the graph stays dynamic in H and W. The zoo's R-CNN weights (trained
  on unresized 96-224 px scenes) keep their accuracy at 160x160 (24 held-out scenes:
  person box AP 0.42, keypoint AP 0.35, vs 0.43 / 0.37 unresized; Mask R-CNN box AP
  0.27, mask AP 0.13, vs 0.30 / 0.16).
* tv-fcos keeps the default resize (min_size 128, max_size 256) and declares sides
  that are multiples of 8 (96, 104, ..., 224, aspect <= 2: 277 sizes): for every one of
  them float64 and float32 give the same resized size (checked exhaustively against the
  exported graph by tests/test_zoo_torchvision.py), as a deployment that pads or crops
  its inputs to a multiple of 8 would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import boxes as box_ops

from deploy_parity.case import InputSpec, SizeSpace
from models import keypoint_rcnn
from models.keypoint_rcnn import IMAGE_MEAN, IMAGE_STD, rcnn_scene_feed

# torchvision's default-resize settings, scaled to the zoo's small images.
MIN_SIZE, MAX_SIZE = 128, 256
# The network size of the fixed_size cases, (width, height) as torchvision reads it.
FIXED_SIZE = (160, 160)
# Every size the R-CNN cases feed: any side 96-224 (odd ones too), aspect up to 2:1.
TV_SIZES = SizeSpace(min_side=96, max_side=224, max_aspect=2.0, export_height=160, export_width=160)
INPUTS = (InputSpec("images", "image", ("float32",)),)  # torchvision's transform takes float images only
SCENE_FEED = rcnn_scene_feed(INPUTS)
# Files whose content keys the tv-* export caches besides the case module's own: the
# model's configuration (sizes, thresholds, detections per image, the tiny backbone)
# lives in plain Python here and in models/keypoint_rcnn.py, which no module class of a
# torchvision detector points the cache's source hash at.
COMMON_SOURCES = (__file__, keypoint_rcnn.__file__)


def tv_transform(fixed_size: Optional[tuple] = FIXED_SIZE) -> GeneralizedRCNNTransform:
    """torchvision's own detection transform: fixed_size=None is its default resize."""
    return GeneralizedRCNNTransform(min_size=MIN_SIZE, max_size=MAX_SIZE, image_mean=list(IMAGE_MEAN),
                                    image_std=list(IMAGE_STD), size_divisible=32, fixed_size=fixed_size)


# ---------------------------------------------------------------- deploy wrappers (broken variants)


def clip_to_image(detections: dict, images: torch.Tensor, size_order: str = "hw") -> dict:
    """One image's detections with boxes (and keypoints) clipped to the input image, as
    deploy pipelines clip after the model. torchvision's detections already lie inside
    the image, so with size_order "hw" it changes nothing; "wh" passes (width, height)
    where (height, width) belongs: square images hide it, and on a W > H image every
    box and keypoint right of x = H is pulled back to x = H."""
    detections = dict(detections)
    # The input's traced size, never Python ints (they would freeze the export size).
    height, width = images.shape[-2], images.shape[-1]
    size = (height, width) if size_order == "hw" else (width, height)
    detections["boxes"] = box_ops.clip_boxes_to_image(detections["boxes"], size)
    if "keypoints" in detections:
        keypoints = detections["keypoints"]
        x = keypoints[..., 0].clamp(min=0).minimum(torch.as_tensor(size[1], dtype=keypoints.dtype))
        y = keypoints[..., 1].clamp(min=0).minimum(torch.as_tensor(size[0], dtype=keypoints.dtype))
        detections["keypoints"] = torch.stack([x, y, keypoints[..., 2]], dim=-1)
    return detections


class ChannelOrder(nn.Module):
    """A deploy wrapper that reorders the input's channels before the model: "rgb" is
    the identity, "bgr" the classic swap of a pipeline that loads images with OpenCV
    and feeds an RGB-trained model."""

    def __init__(self, detector: nn.Module, order: str = "rgb"):
        super().__init__()
        self.detector = detector
        self.order = order

    def forward(self, images: torch.Tensor):
        if self.order == "bgr":
            images = images.flip(1)
        return self.detector(images)


# ---------------------------------------------------------------- a user's own fixed-size export


def _content_key(module: nn.Module, source_files, extra: dict) -> str:
    from deploy_parity.hashing import json_hash, module_source_hash, state_dict_hash

    return json_hash({"code": module_source_hash(module, source_files), "weights": state_dict_hash(module),
                      "torch": torch.__version__, **extra})[:16]


class ExportedOnFirstUse:
    """The `onnx_path` of a case that brings its own graph: a function ModelCase calls
    when the harness first opens the graph (deploy_parity.case.ArtifactOnFirstUse).

    What a user does without thinking of sizes: torch.onnx.export(model, (sample,),
    ...) with no dynamic axes, which gives a graph fixed at the sample's size. The graph
    is exported into the export cache's user-artifacts folder (PARITY_CACHE_DIR, else
    ./.parity_cache) the first time the harness opens it, not at import: listing the zoo
    exports nothing. Keyed by the model's code (its classes' files and `source_files`,
    where its configuration lives), weights and torch version.
    """

    def __init__(self, name: str, build: Callable[[], nn.Module], output_names, height: int, width: int,
                 source_files=()):
        self.name = name
        self.source_files = tuple(source_files)
        self.build = build
        self.output_names = tuple(output_names)
        self.height, self.width = height, width
        self._path: Optional[Path] = None

    def __call__(self) -> Path:
        if self._path is not None and self._path.is_file():
            return self._path
        from deploy_parity.export.onnx_exporter import check_onnx

        model = self.build().eval()
        key = _content_key(model, self.source_files, {"size": [self.height, self.width], "outputs": self.output_names})
        cache = Path(os.environ.get("PARITY_CACHE_DIR") or Path.cwd() / ".parity_cache") / "user-artifacts"
        path = cache / f"{self.name}-{self.height}x{self.width}-{key}.onnx"
        if not path.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
            sample = torch.rand(1, 3, self.height, self.width, generator=torch.Generator().manual_seed(0))
            try:
                torch.onnx.export(model, (sample,), str(tmp), dynamo=False, opset_version=17, input_names=["images"],
                                  output_names=list(self.output_names))
                check_onnx(tmp)
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
            path.with_suffix(".json").write_text(json.dumps(
                {"case": self.name, "export": "torch.onnx.export without dynamic_axes",
                 "size": [self.height, self.width]}, indent=1))
        self._path = path
        return path

    def __repr__(self) -> str:
        return f"ExportedOnFirstUse({self.name!r}, {self.height}x{self.width})"

