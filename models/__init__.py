"""The built-in model zoo: each module defines CASES (see deploy_parity.case.ModelCase).

INDEX names every case and the module that defines it, so a run imports only the
modules of the cases it runs (a pose-rtmo run never imports torchvision); DEFAULT_RUN is
the default run. tests/test_registry_and_options.py checks both against the modules' own
CASES, so a case added to a module and not here fails a test instead of going missing.
"""

# case name -> module (under models/)
INDEX = {
    "pose-rtmo": "pose_rtmo", "pose-rtmo-broken": "pose_rtmo", "pose-rtmo-batch-broken": "pose_rtmo",
    "detr-tiny": "detr_tiny", "detr-tiny-broken": "detr_tiny",
    "keypoint-rcnn": "keypoint_rcnn", "keypoint-rcnn-broken": "keypoint_rcnn",
    "mask-rcnn": "mask_rcnn", "mask-rcnn-fixed": "mask_rcnn", "mask-rcnn-broken": "mask_rcnn",
    "tv-keypoint-rcnn": "tv_keypoint_rcnn", "tv-keypoint-rcnn-default-resize": "tv_keypoint_rcnn",
    "tv-keypoint-rcnn-clip-hw": "tv_keypoint_rcnn",
    "tv-mask-rcnn": "tv_mask_rcnn", "tv-mask-rcnn-bgr": "tv_mask_rcnn",
    "tv-fcos": "tv_fcos", "tv-fcos-fixed-export": "tv_fcos",
    "yolo-pose": "yolo_pose", "yolo-pose-fixed-export": "yolo_pose",
    "yolo-seg": "yolo_seg", "yolo-seg-bgr": "yolo_seg",
}

# The cases of the default run (ModelCase.default is True for exactly these).
DEFAULT_RUN = ("detr-tiny", "keypoint-rcnn", "mask-rcnn", "mask-rcnn-fixed", "pose-rtmo")
