"""Parity cases on real architectures OUTSIDE the zoo, to validate the tolerance table
(deploy_parity/compare/tolerances.py) and the noise floor on models nobody tuned them
for. Not part of CI, not in tox, not in the zoo: a user-style cases module, run by hand
with --model-module.

Every model is a full-size architecture as its library builds it, from code only
(torchvision weights=None, weights_backbone=None; Ultralytics from its packaged yaml at
its own "n" scale; nothing is downloaded), 3 classes (the scenes' person, block, disc),
random weights seeded per model (SEEDS), then made to behave like a detector by one
helper, `calibrate`, on CALIBRATION_IMAGES (24) scene images (deploy_parity/scenes):

1. BatchNorm recalibration: running statistics reset, every BN layer in train mode
   with momentum=None (cumulative average), the images run under torch.no_grad(), then
   eval(). Only the BN layers go to train mode: a torchvision detector in train() wants
   targets, and this way the heads' BN layers (SSDlite's, YOLO's) are recalibrated too.
2. Head standardisation (LSUV-style): the final class / box layers' weights scaled so
   their outputs (before the bias) have a set rms on the scenes (CLASS_LOGIT_RMS, ...).
   The libraries initialise heads for training (std 0.01 under a prior bias): every
   anchor of a random model then scores the same to 1e-3 (RetinaNet 0.0107 +- 0.0003,
   YOLO11 0.005, Faster R-CNN 0.27) with boxes equal to their anchors. SSDlite needs
   no scaling (its scores already spread 0.5-0.99).

Score thresholds are then set so that the reference keeps several detections on most
scene feeds (reference_counts below; a case with nothing detected is VACUOUS):

  case                                     architecture                              threshold  seed
  unseen-tv-retinanet-r50                  RetinaNet, ResNet-50 FPN, fixed_size 224x160   0.2    20270101
  unseen-tv-fasterrcnn-mobilenet           Faster R-CNN, MobileNetV3-L 320 FPN, 256x192   0.5    20270102
  unseen-tv-ssdlite                        SSDlite320, MobileNetV3-L, SSD's own 320x320   0.5    20270103
  unseen-yolo11-detect                     yolo11n.yaml detect, harness export            0.005  20270104
  unseen-yolo11-detect-ultralytics-export  the same, Ultralytics' exporter, dynamic=True  0.005  20270104
  unseen-yolo11-seg                        yolo11n-seg.yaml segment, harness export       0.005  20270107

Inputs: float32 RGB in [0, 1], sides 96-224 (aspect <= 2; YOLO multiples of 32, batch
up to 2; torchvision batch 1). The torchvision R-CNN / RetinaNet transforms use
`fixed_size` (models/tv_common.py says why: eager and traced resize alike).

A random network's activations depend far more on the scene than a trained one's: on
some cluttered scenes the final layers' rms is 5-20x the calibrated one (peaked DFL
distributions, 100 detections). The YOLO seeds were picked among a few for the mildest
spread (20270105 for seg: DFL rms up to 46 vs median 1.9; 20270107: up to 4.9).

Run one model at a time, from the repository root:

  .tox/tests/bin/python -m pytest suites --model-module tools/validation/unseen_cases.py \
      --model unseen-tv-retinanet-r50 --hypothesis-profile ci -x -q --no-html-report -p no:cacheprovider

and the references' detection counts on 48 scene feeds (the non-VACUOUS check):

  .tox/tests/bin/python tools/validation/unseen_cases.py [CASE ...]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Before Ultralytics is first imported (as tox.ini sets them): settings in a scratch
# folder, no pip installs, no network.
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "deploy-parity-ultralytics"))
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_OFFLINE", "1")

if __name__ == "__main__":  # run as a script: the repository root on the path, as pytest's pythonpath does
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import copy  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import logging  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.models.detection import (  # noqa: E402
    fasterrcnn_mobilenet_v3_large_320_fpn,
    retinanet_resnet50_fpn,
    ssdlite320_mobilenet_v3_large,
)
from torchvision.models.detection.transform import GeneralizedRCNNTransform  # noqa: E402

from deploy_parity.adapters import TorchvisionDetection, UltralyticsYOLO  # noqa: E402
from deploy_parity.case import DeployTarget, InputSpec, Judging, ModelCase, SizeSpace, ZooEntry  # noqa: E402
from deploy_parity.errors import ArtifactError  # noqa: E402
from deploy_parity.scenes.feeds import scene_feed, scene_images  # noqa: E402

# ---------------------------------------------------------------- seeds and calibration

SEEDS = {
    "retinanet": 20270101,
    "fasterrcnn": 20270102,
    "ssdlite": 20270103,
    "yolo11-detect": 20270104,
    "yolo11-seg": 20270107,  # 20270105: DFL logits up to 20x the calibrated rms on cluttered scenes
}
CALIBRATION_SEED = 777  # scene seed of the calibration images (feeds draw their own seeds)
CALIBRATION_IMAGES = 24  # 3 batches of 8
CALIBRATION_SIZES = ((160, 160), (128, 224), (224, 128))  # (height, width) of each batch
NUM_CLASSES = 3  # the scenes' person, block, disc (torchvision adds background as class 0)
INPUTS = (InputSpec("images", "image", ("float32",)),)
# Head standardisation (calibrate's second step): the rms of the final layers' outputs
# on scene images, before their bias. Class logits: a trained detector's spread of a
# few units. Box deltas: boxes moved off their anchors by ~20% of their size. DFL: peaked
# box-side distributions over Ultralytics' 16 bins.
CLASS_LOGIT_RMS = 1.0
# Ultralytics' class prior bias, log(5 / nc / (640 / stride)^2), is -8.3 / -6.9 / -5.5 for
# strides 8 / 16 / 32 (RetinaNet's -4.6): a wider spread reaches above it.
YOLO_CLASS_LOGIT_RMS = 2.0
MASK_COEFFICIENT_RMS = 4.0  # mask logits spread well beyond the 0.5 threshold
BOX_DELTA_RMS = 0.2
DFL_LOGIT_RMS = 2.0
SOURCES = (__file__,)  # this file's content keys the export caches: the configuration lives here


@functools.lru_cache(maxsize=4)
def calibration_batches(multiple_of: int = 1) -> tuple:
    """CALIBRATION_IMAGES scene images as float32 (N, 3, H, W) batches in [0, 1], at
    CALIBRATION_SIZES rounded down to `multiple_of`."""
    per_batch = CALIBRATION_IMAGES // len(CALIBRATION_SIZES)
    batches = []
    for i, (height, width) in enumerate(CALIBRATION_SIZES):
        height, width = height // multiple_of * multiple_of, width // multiple_of * multiple_of
        images, _ = scene_images(height, width, per_batch, CALIBRATION_SEED + i)
        batches.append(torch.from_numpy(images.astype(np.float32) / 255.0))
    return tuple(batches)


def calibrate(model: nn.Module, run=None, multiple_of: int = 1, heads=()) -> nn.Module:
    """The one calibration helper: a randomly initialised model's activations given the
    statistics of scene images. Returns the model in eval mode.

    1. BatchNorm: every BN layer's running statistics reset and re-estimated, the BN
       layers in train mode with momentum=None (a cumulative average over all batches),
       the rest of the model in eval mode, `run(model, batch)` (default model(batch))
       under no_grad over the CALIBRATION_IMAGES scene images.
    2. heads: groups of (layer, target_rms), in order (a later group may depend on an
       earlier one, as an R-CNN's box head on its RPN's proposals). Each group's final
       Conv2d / Linear layers get their weights scaled so that the weight part of their
       output (output minus bias) has root-mean-square target_rms on the scene images
       (LSUV-style). Detection heads are initialised for training: tiny final weights
       (std 0.01) under a prior bias, so every anchor of a random model scores the same
       to 1e-3 (RetinaNet 0.0107 +- 0.0003, YOLO11 0.005 +- 0.0005, Faster R-CNN 0.27
       +- 0.01): no score ranking to speak of, no box shape but the anchor's. Scaled,
       class logits spread like a trained detector's and the box regressions move
       boxes off their anchors. The biases (the priors) are kept.
    """
    run = run or (lambda m, batch: m(batch))
    batches = calibration_batches(multiple_of)
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    with torch.no_grad():
        for batch in batches:
            run(model, batch)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()
    for group in heads:
        sums = {}

        def record(layer, args, output):
            bias = layer.bias.view(1, -1, *([1] * (output.dim() - 2))) if layer.bias is not None else 0.0
            total, count = sums.get(layer, (0.0, 0))
            sums[layer] = (total + float(((output - bias) ** 2).sum()), count + output.numel())

        hooks = [layer.register_forward_hook(record) for layer, _ in group]
        try:
            with torch.no_grad():
                run(model, batches[0])  # one batch: an rms needs fewer images than BN statistics
        finally:
            for hook in hooks:
                hook.remove()
        with torch.no_grad():
            for layer, target in group:
                total, count = sums[layer]
                layer.weight.mul_(target / max((total / count) ** 0.5, 1e-12))
    return model


def cached_builder(build):
    """build_reference: the model built and calibrated once per process, then copied
    (the harness builds the reference and deploy modules several times)."""
    made = functools.lru_cache(maxsize=1)(build)

    def build_reference():
        return copy.deepcopy(made()).eval()

    build_reference.__name__ = build_reference.__qualname__ = f"build_{build.__name__}"
    return build_reference


def delta_rms(box_coder) -> float:
    """The raw regression output's target rms for a torchvision BoxCoder: BOX_DELTA_RMS
    after its weights divide the raw deltas (RetinaNet / RPN (1, 1, 1, 1), the Fast R-CNN
    box head (10, 10, 5, 5))."""
    weights = box_coder.weights
    return BOX_DELTA_RMS * float(np.sqrt(np.mean(np.square(weights))))


def run_torchvision(model, batch):
    return model(list(batch))  # a torchvision detector takes a list of (3, H, W) images


# ---------------------------------------------------------------- torchvision

TV_SIZES = SizeSpace(min_side=96, max_side=224, max_aspect=2.0, export_height=160, export_width=160)
# 1-3 people and 0-2 blocks/discs in every image: no empty-scene control (the R-CNN zoo feed's 1 seed in 12),
# where a random model's answer is as random as anywhere and only adds VACUOUS cases.
SCENE_FEED = scene_feed(INPUTS, min_people=1, max_people=3, max_objects=2)

RETINANET_FIXED_SIZE = (224, 160)  # (width, height) as torchvision reads fixed_size
RETINANET_SCORE = 0.2
RETINANET_DETECTIONS = 50
FASTERRCNN_FIXED_SIZE = (256, 192)
FASTERRCNN_SCORE = 0.5
FASTERRCNN_DETECTIONS = 50
SSDLITE_SCORE = 0.5
SSDLITE_DETECTIONS = 100


def fixed_transform(model, fixed_size) -> GeneralizedRCNNTransform:
    """The model's own transform (its mean, std, min/max size) with fixed_size: eager and
    traced resize every input to one network size (models/tv_common.py)."""
    t = model.transform
    return GeneralizedRCNNTransform(min_size=t.min_size, max_size=t.max_size, image_mean=list(t.image_mean),
                                    image_std=list(t.image_std), size_divisible=t.size_divisible,
                                    fixed_size=fixed_size)


def retinanet():
    torch.manual_seed(SEEDS["retinanet"])
    model = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1,
                                   min_size=128, max_size=224, score_thresh=RETINANET_SCORE,
                                   detections_per_img=RETINANET_DETECTIONS, topk_candidates=100)
    model.transform = fixed_transform(model, RETINANET_FIXED_SIZE)
    head = model.head
    return calibrate(model, run_torchvision, heads=[[(head.classification_head.cls_logits, CLASS_LOGIT_RMS),
                                                     (head.regression_head.bbox_reg, delta_rms(model.box_coder))]])


def fasterrcnn():
    torch.manual_seed(SEEDS["fasterrcnn"])
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                  num_classes=NUM_CLASSES + 1, min_size=192, max_size=256,
                                                  box_score_thresh=FASTERRCNN_SCORE,
                                                  box_detections_per_img=FASTERRCNN_DETECTIONS)
    model.transform = fixed_transform(model, FASTERRCNN_FIXED_SIZE)
    rpn, predictor = model.rpn, model.roi_heads.box_predictor
    return calibrate(model, run_torchvision, heads=[
        [(rpn.head.cls_logits, CLASS_LOGIT_RMS), (rpn.head.bbox_pred, delta_rms(rpn.box_coder))],
        [(predictor.cls_score, CLASS_LOGIT_RMS), (predictor.bbox_pred, delta_rms(model.roi_heads.box_coder))],
    ])


def ssdlite():
    # SSD's own transform already resizes every input to a fixed 320x320.
    torch.manual_seed(SEEDS["ssdlite"])
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1,
                                          score_thresh=SSDLITE_SCORE, detections_per_img=SSDLITE_DETECTIONS,
                                          topk_candidates=100)
    return calibrate(model, run_torchvision)


def tv_case(name, description, build, score, detections, order, nms_iou):
    return ModelCase(
        name=name,
        description=description,
        build_reference=cached_builder(build),
        inputs=INPUTS,
        sizes=TV_SIZES,
        adapter=TorchvisionDetection(order=order, score_threshold=score, topk=detections),
        max_batch=1,  # torchvision detection exports take one image
        spatial_binding="dynamic",
        make_feed=SCENE_FEED,
        judging=Judging(nms_iou_threshold=nms_iou),  # the model's own NMS IoU
        zoo=ZooEntry(default=True, source_files=SOURCES),
    )


TV_RETINANET = tv_case("unseen-tv-retinanet-r50",
                       "torchvision RetinaNet ResNet-50 FPN (random seeded, BN recalibrated on scenes), "
                       "fixed_size 224x160", retinanet, RETINANET_SCORE, RETINANET_DETECTIONS, "single-stage", 0.5)
TV_FASTERRCNN = tv_case("unseen-tv-fasterrcnn-mobilenet",
                        "torchvision Faster R-CNN MobileNetV3-Large 320 FPN (random seeded, BN recalibrated), "
                        "fixed_size 256x192", fasterrcnn, FASTERRCNN_SCORE, FASTERRCNN_DETECTIONS, "rcnn", 0.5)
TV_SSDLITE = tv_case("unseen-tv-ssdlite",
                     "torchvision SSDlite320 MobileNetV3-Large (random seeded, BN recalibrated), fixed 320x320 "
                     "resize", ssdlite, SSDLITE_SCORE, SSDLITE_DETECTIONS, "single-stage", 0.55)

# ---------------------------------------------------------------- Ultralytics

import ultralytics  # noqa: E402
from ultralytics.nn import tasks as ultralytics_tasks  # noqa: E402

from models.yolo_common import artifact_cache_dir, export_form, quiet_ultralytics  # noqa: E402

YOLO_SIZES = SizeSpace(min_side=96, max_side=224, multiple_of=32, export_height=160, export_width=160)
YOLO_EXPORT_SIZE = (160, 160)  # (height, width) given to Ultralytics' exporter as imgsz
YOLO_DETECT_CONF = 0.005
YOLO_SEG_CONF = 0.005
YOLO_MAX_BATCH = 2
YOLO_MAX_DET = 100  # Ultralytics' max_det (default 300): a random model's busiest scenes reach 300


def yolo(yaml: str, seed_name: str, task: str):
    """Ultralytics' packaged yaml at its own scale ("n"), NUM_CLASSES classes, seeded."""
    torch.manual_seed(SEEDS[seed_name])
    cfg = ultralytics_tasks.yaml_model_load(yaml)
    cfg["nc"] = NUM_CLASSES
    with quiet_ultralytics():
        model_class = ultralytics_tasks.SegmentationModel if task == "segment" else ultralytics_tasks.DetectionModel
        model = model_class(cfg, ch=3, verbose=False)
    model.names = {0: "person", 1: "block", 2: "disc"}
    model.task = task
    head = model.model[-1]  # Detect / Segment: cv2 box distributions (DFL logits), cv3 class logits
    layers = [(branch[-1], YOLO_CLASS_LOGIT_RMS) for branch in head.cv3]
    layers += [(branch[-1], DFL_LOGIT_RMS) for branch in head.cv2]
    layers += [(branch[-1], MASK_COEFFICIENT_RMS) for branch in getattr(head, "cv4", ())]  # Segment
    return calibrate(model, multiple_of=32, heads=[layers])


def yolo11_detect():
    return yolo("yolo11n.yaml", "yolo11-detect", "detect")


def yolo11_seg():
    return yolo("yolo11n-seg.yaml", "yolo11-seg", "segment")


def yolo_deploy(build_reference):
    def build_deploy(target: DeployTarget):
        return export_form(build_reference(), dynamic=target.height is None)

    return build_deploy


def yolo_case(name, description, build, adapter):
    build_reference = cached_builder(build)
    return ModelCase(
        name=name,
        description=description,
        build_reference=build_reference,
        build_deploy=yolo_deploy(build_reference),
        inputs=INPUTS,
        adapter=adapter,
        sizes=YOLO_SIZES,  # strides 8/16/32
        max_batch=YOLO_MAX_BATCH,
        make_feed=SCENE_FEED,
        zoo=ZooEntry(default=True, source_files=SOURCES),
    )


YOLO11_DETECT = yolo_case("unseen-yolo11-detect",
                          "Ultralytics YOLO11n detect (yolo11n.yaml, random seeded, BN recalibrated), harness export",
                          yolo11_detect,
                          UltralyticsYOLO("detect", num_classes=NUM_CLASSES, score_threshold=YOLO_DETECT_CONF,
                                          max_det=YOLO_MAX_DET))
YOLO11_SEG = yolo_case("unseen-yolo11-seg",
                       "Ultralytics YOLO11n-seg (yolo11n-seg.yaml, random seeded, BN recalibrated), harness export",
                       yolo11_seg,
                       UltralyticsYOLO("segment", num_classes=NUM_CLASSES, score_threshold=YOLO_SEG_CONF,
                                       max_det=YOLO_MAX_DET))


def ultralytics_export(case: ModelCase, height: int, width: int):
    """onnx_path of a case: `model.export(format="onnx", dynamic=True, imgsz=(h, w))` by
    Ultralytics' own Exporter, made on first use into the harness's cache
    (models.yolo_common.artifact_cache_dir()), keyed by the model's weights, this file
    and the library versions."""

    def make() -> Path:
        from deploy_parity.hashing import state_dict_hash
        from ultralytics.engine.exporter import Exporter

        model = case.build_reference()
        digest = hashlib.sha256()
        digest.update(Path(__file__).read_bytes())
        digest.update(f"{state_dict_hash(model)}|{height}x{width}|{ultralytics.__version__}|{torch.__version__}"
                      .encode())
        path = artifact_cache_dir() / f"{case.name}-ultralytics-export-dynamic-{digest.hexdigest()[:16]}.onnx"
        if path.is_file():
            return path
        model.args = {"data": "deploy_parity/scenes (synthetic scenes)"}  # what the exporter's metadata reads
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            model.pt_path = str(Path(scratch) / f"{case.name}.pt")  # the exporter writes next to it
            try:
                with quiet_ultralytics(logging.ERROR):
                    produced = Exporter(overrides={"format": "onnx", "imgsz": [height, width], "dynamic": True,
                                                   "device": "cpu"})(model=model)
            except Exception as exc:  # noqa: BLE001 - reported against the artifact it should have made
                raise ArtifactError(path, f"Ultralytics' ONNX export failed: {exc}".splitlines()[0]) from exc
            os.replace(produced, path)
        return path

    make.__qualname__ = f"ultralytics_export({case.name!r})"
    return make


YOLO11_DETECT_EXPORT = replace(
    YOLO11_DETECT,
    name="unseen-yolo11-detect-ultralytics-export",
    description="unseen-yolo11-detect with the graph of Ultralytics' own exporter, model.export(format='onnx', "
                "dynamic=True, imgsz=160)",
    onnx_path=ultralytics_export(YOLO11_DETECT, *YOLO_EXPORT_SIZE),
)

CASES = [TV_RETINANET, TV_FASTERRCNN, TV_SSDLITE, YOLO11_DETECT, YOLO11_DETECT_EXPORT, YOLO11_SEG]


# ---------------------------------------------------------------- by hand: are the references vacuous?


def reference_counts(case: ModelCase, feeds=((96, 96), (160, 160), (128, 224), (224, 128), (96, 192), (224, 224)),
                     seeds=(0, 1, 2, 3, 25, 551, 645, 1285)):
    """Per feed (size, seed): how many instances the reference keeps above the case's
    score threshold, with the top score and the forward time."""
    import time

    model = case.build_reference()
    rows = []
    for height, width in feeds:
        if not case.sizes.accepts(height, width):
            height, width = (max(case.sizes.min_side, s // case.sizes.multiple_of * case.sizes.multiple_of)
                             for s in (height, width))
        for seed in seeds:
            feed = case.make_feed(height=height, width=width, batch=1, seed=seed, dtypes=case.default_dtypes())
            images = torch.from_numpy(feed["images"])
            start = time.perf_counter()
            with torch.no_grad():
                result = model(images)
            seconds = time.perf_counter() - start
            outputs = {k: v.numpy() for k, v in case.named_outputs(result).items()}
            instances = case.to_instances(outputs, 0, (height, width))
            scores = np.asarray(instances.scores)
            kept = int((scores > case.score_threshold).sum())
            top = float(scores.max()) if len(scores) else float("nan")
            rows.append((height, width, seed, kept, top, seconds))
    return rows


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    wanted = sys.argv[1:] or [c.name for c in CASES if c.onnx_path is None]
    for case in CASES:
        if case.name not in wanted:
            continue
        rows = reference_counts(case)
        counts = [r[3] for r in rows]
        print(f"{case.name}: threshold {case.score_threshold}, detections per feed {counts}, "
              f"{sum(c >= 1 for c in counts)}/{len(counts)} feeds with >= 1, "
              f"top scores {min(r[4] for r in rows):.3f}..{max(r[4] for r in rows):.3f}, "
              f"forward median {np.median([r[5] for r in rows]):.2f} s, max {max(r[5] for r in rows):.2f} s", flush=True)
