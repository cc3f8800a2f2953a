"""Ultralytics YOLO11 pose (17 COCO keypoints) at a tiny scale, trained briefly on the
scene renderer's people (tools/train_yolo.py; weights models/weights/yolo_pose.pt).

* `yolo-pose`: the reference is the trained model in eval mode; the deploy module is
  what Ultralytics' exporter traces (fused, head in export mode, dynamic shapes),
  exported by the harness with dynamic batch, height and width. Outputs are read by
  deploy_parity.adapters.UltralyticsYOLO("pose"): the raw head output0 (B, 56, N),
  decoded and NMSed in the harness.
* `yolo-pose-fixed-export`: the same case bringing, as its own onnx_path, the graph
  Ultralytics' exporter makes with its defaults, `model.export(format="onnx",
  imgsz=160)`: dynamic=False, one 1x3x160x160 input. The case declares sides 64-256 and
  batch up to 4, so the artifact accepts less than the case declares (the coverage
  verdict). The .onnx is made at run time, into the harness's cache directory.

Not in the default run: it needs the `ultralytics` extra.
"""

from __future__ import annotations

from dataclasses import replace

from deploy_parity.adapters import UltralyticsYOLO
from deploy_parity.case import DeployTarget, InputSpec, ModelCase, SizeSpace, ZooEntry
from deploy_parity.scenes.feeds import scene_feed
from models.yolo_common import POSE, export_form, fixed_export, load_trained

EXPORT_SIZE = (160, 160)  # (height, width)


def build_reference():
    return load_trained(POSE)


def build_deploy(target: DeployTarget):
    return export_form(load_trained(POSE), dynamic=target.height is None)


INPUTS = (InputSpec("images", "image", ("float32",)),)

CASE = ModelCase(
    name="yolo-pose",
    description="Ultralytics YOLO11 pose at a tiny scale, raw head output decoded and NMSed in the harness",
    build_reference=build_reference,
    build_deploy=build_deploy,
    inputs=INPUTS,
    # Ultralytics' predict defaults: conf 0.25, NMS IoU 0.7, max_det 300.
    adapter=UltralyticsYOLO("pose", num_classes=POSE.num_classes, kpt_shape=POSE.kpt_shape),
    # Strides 8/16/32: Ultralytics' exporter rounds imgsz to multiples of 32.
    sizes=SizeSpace(min_side=64, max_side=256, multiple_of=32, export_height=EXPORT_SIZE[0],
                    export_width=EXPORT_SIZE[1]),
    max_batch=4,
    make_feed=scene_feed(INPUTS, min_people=1, max_people=3, max_objects=2),
    zoo=ZooEntry(default=False),
)

FIXED_EXPORT = replace(
    CASE,
    name="yolo-pose-fixed-export",
    description=f"yolo-pose bringing Ultralytics' default ONNX export (dynamic=False, batch 1, "
                f"{EXPORT_SIZE[0]}x{EXPORT_SIZE[1]}) for a case of sides 64-256 and batch up to 4",
    # A function: Ultralytics exports when the harness first opens the graph, not at import.
    onnx_path=lambda: fixed_export(POSE, *EXPORT_SIZE),
)

CASES = [CASE, FIXED_EXPORT]
