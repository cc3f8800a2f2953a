"""Ultralytics YOLOv8 instance segmentation at a tiny scale, trained briefly on the scene
renderer's person / block / disc (tools/train_yolo.py; weights models/weights/yolo_seg.pt).

* `yolo-seg`: the reference is the trained model in eval mode, returning ((predictions,
  prototypes), raw head outputs); the deploy module is what Ultralytics' exporter traces
  (fused, head in export mode, dynamic shapes), returning output0 (B, 4+3+32, N) and
  output1, the prototypes (B, 32, H/4, W/4). deploy_parity.adapters.UltralyticsYOLO
  ("segment") decodes, NMSes and builds soft masks at prototype resolution.
  Images are float32 in [0, 1] or uint8 frames in [0, 255], both RGB (models.yolo_common
  .ImageInput divides uint8 by 255 in the reference and the deploy module alike).
* `yolo-seg-bgr`: the deploy wrapper's uint8 path was written for OpenCV frames (BGR) and
  reverses the channels of frames that are RGB. The float32 path is right, so a float32
  smoke test (and the suites' square and export-size examples) passes; every uint8
  image gives different boxes, scores and masks, and parity shrinks the failure to the
  smallest one.

Not in the default run: it needs the `ultralytics` extra.
"""

from __future__ import annotations

from dataclasses import replace

from deploy_parity.adapters import UltralyticsYOLO
from deploy_parity.case import DeployTarget, InputSpec, ModelCase, SizeSpace, ZooEntry
from deploy_parity.scenes.feeds import scene_feed
from models.yolo_common import SEG, ImageInput, export_form, load_trained


def build_reference():
    return ImageInput(load_trained(SEG)).eval()


def deploy_builder(uint8_is_bgr: bool = False):
    def build_deploy(target: DeployTarget):
        deploy = export_form(load_trained(SEG), dynamic=target.height is None)
        return ImageInput(deploy, uint8_is_bgr=uint8_is_bgr).eval()

    return build_deploy


INPUTS = (InputSpec("images", "image", ("float32", "uint8")),)

CASE = ModelCase(
    name="yolo-seg",
    description="Ultralytics YOLOv8 segmentation at a tiny scale (person, block, disc), soft prototype masks",
    build_reference=build_reference,
    build_deploy=deploy_builder(),
    inputs=INPUTS,
    # Ultralytics' predict defaults: conf 0.25, NMS IoU 0.7 (class-aware), max_det 300.
    adapter=UltralyticsYOLO("segment", num_classes=SEG.num_classes),
    sizes=SizeSpace(min_side=64, max_side=256, multiple_of=32, export_height=160, export_width=160),
    max_batch=4,
    make_feed=scene_feed(INPUTS, min_people=1, max_people=3, max_objects=2),
    zoo=ZooEntry(default=False),
)

BGR = replace(
    CASE,
    name="yolo-seg-bgr",
    description="yolo-seg whose deploy wrapper reverses the channels of uint8 frames (written for OpenCV's BGR)",
    build_deploy=deploy_builder(uint8_is_bgr=True),
)

CASES = [CASE, BGR]
