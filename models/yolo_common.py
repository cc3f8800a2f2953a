"""What the zoo's Ultralytics YOLO cases share (models/yolo_pose.py, models/yolo_seg.py,
and their training, tools/train_yolo.py).

The models are Ultralytics' own, built from the yaml files Ultralytics ships
(ultralytics/cfg/models/) at a custom scale far below "n" so the committed weights stay
under 1 MB (stored as an fp16 state_dict, loaded back into fp32). Nothing is downloaded:
the environment below keeps Ultralytics offline and away from the user's settings, and
must be set before Ultralytics is first imported, so this module sets it on import.

* reference: the trained model in eval mode, as a user holds it. Its head returns
  (decoded predictions, raw head outputs), segment ((predictions, prototypes), raw).
* deploy: what Ultralytics' ONNX exporter traces: Conv+BN fused, heads in export mode
  (`export = True`, `dynamic = True` for a dynamic-shape export, `format = "onnx"`),
  C2f blocks on their split forward. It returns the raw head form, output0 (B, 4+nc+E,
  N) [+ output1 prototypes], read by deploy_parity.adapters.UltralyticsYOLO.
* fixed_export: Ultralytics' own exporter with its defaults (dynamic=False, batch 1),
  producing the .onnx a user who ran `model.export(format="onnx", imgsz=160)` holds.

Images are (B, 3, H, W) RGB, float32 in [0, 1] as Ultralytics takes them, or uint8 in
[0, 255] (ImageInput divides by 255 first).
"""

from __future__ import annotations

import os
import tempfile

# Before any `import ultralytics`: its settings go to a scratch directory, never to the
# user's; no pip installs and no network calls (e.g. for fonts or release checks).
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "deploy-parity-ultralytics"))
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_OFFLINE", "1")

import contextlib  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import logging  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

# Imported here, not when first used: without the extra, the zoo lists these cases as
# unavailable with the install command (deploy_parity/registry.py, OPTIONAL_ZOO_PACKAGES).
import ultralytics  # noqa: E402
from ultralytics.nn import tasks as ultralytics_tasks  # noqa: E402
from ultralytics.nn.modules import C2f, Detect  # noqa: E402
from ultralytics.utils import LOGGER as ULTRALYTICS_LOGGER  # noqa: E402

from deploy_parity.errors import ArtifactError, ModelCaseError  # noqa: E402

WEIGHTS_DIR = Path(__file__).with_name("weights")
# [depth, width, max_channels] in the yaml's `scales` table; "n" is [0.50, 0.25, 1024].
# Width 1/16 gives 8..64 channels: ~0.45 M parameters, under 1 MB in fp16, and about
# 10 ms per 160x160 image on one CPU thread.
TINY_SCALE = (0.33, 0.0625, 1024)


@dataclass(frozen=True)
class YoloSpec:
    """One zoo YOLO: which packaged yaml, at which scale, for which classes."""

    name: str  # weights file stem, models/weights/<name>.pt
    yaml: str  # a yaml Ultralytics ships, e.g. "yolo11n-pose.yaml"
    task: str  # "pose" or "segment"
    class_names: tuple
    kpt_shape: Optional[tuple] = None
    scale: tuple = TINY_SCALE

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.pt"


# 17 COCO keypoints on the scene renderer's people (deploy_parity/scenes/skeleton.py keeps COCO's order).
POSE = YoloSpec("yolo_pose", "yolo11n-pose.yaml", "pose", ("person",), kpt_shape=(17, 3))
# The scene renderer's three instance classes; label L of a scene is class L - 1 here.
SEG = YoloSpec("yolo_seg", "yolov8n-seg.yaml", "segment", ("person", "block", "disc"))


@contextlib.contextmanager
def quiet_ultralytics(level: int = logging.WARNING):
    """Ultralytics logs every build, fuse and export at INFO; the suites' output is ours."""
    previous = ULTRALYTICS_LOGGER.level
    ULTRALYTICS_LOGGER.setLevel(level)
    try:
        yield
    finally:
        ULTRALYTICS_LOGGER.setLevel(previous)


def build_untrained(spec: YoloSpec):
    """The Ultralytics model of `spec` with fresh weights (Ultralytics' own initialisation)."""
    tasks = ultralytics_tasks  # ultralytics.nn.tasks
    cfg = tasks.yaml_model_load(spec.yaml)
    cfg["scales"] = {cfg["scale"]: list(spec.scale)}
    cfg["nc"] = spec.num_classes  # set here, not by argument: no "Overriding nc" log line
    with quiet_ultralytics():
        if spec.task == "pose":
            cfg["kpt_shape"] = list(spec.kpt_shape)
            model = tasks.PoseModel(cfg, ch=3, verbose=False)
        elif spec.task == "segment":
            model = tasks.SegmentationModel(cfg, ch=3, verbose=False)
        else:
            raise ModelCaseError(f"{spec.name}: task {spec.task!r} is not a zoo YOLO task")
    model.names = dict(enumerate(spec.class_names))
    model.task = spec.task
    return model


def save_weights(model, path: Path) -> None:
    """The state_dict in fp16 (floating tensors), what build_reference loads back."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, path)


def load_trained(spec: YoloSpec, path: Optional[Path] = None):
    """The trained model in eval mode, fp32 (the fp16 weights widened exactly)."""
    path = Path(path or spec.weights)
    if not path.is_file():
        raise ModelCaseError(f"{path} is missing: run tools/train_yolo.py --task {spec.task} to train it")
    model = build_untrained(spec)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
    return model.eval()


class ImageInput(nn.Module):
    """Images as the harness feeds them, RGB, float in [0, 1] or uint8 in [0, 255] (a camera
    frame), into an Ultralytics model, which takes float RGB in [0, 1].

    uint8_is_bgr: the bug of yolo-seg-bgr. The uint8 path was written for OpenCV frames
    (cv2.imread, cv2.VideoCapture: BGR) and reverses their channels, though the frames
    it gets are RGB like everything else; the float path, the one a float32 smoke test
    exercises, is right."""

    def __init__(self, model, uint8_is_bgr: bool = False):
        super().__init__()
        self.model = model
        self.uint8_is_bgr = uint8_is_bgr

    def forward(self, images: torch.Tensor):
        if images.dtype == torch.uint8:
            # To the weights' dtype: under .half() (torch-cuda-fp16) the model runs in fp16.
            images = images.to(next(self.model.parameters()).dtype) / 255.0
            if self.uint8_is_bgr:
                images = images[:, [2, 1, 0]]
        return self.model(images)


def export_form(model, dynamic: bool = True) -> nn.Module:
    """What Ultralytics' exporter traces for ONNX (engine/exporter.py, Exporter.__call__):
    a fused copy, its heads in export mode, C2f blocks on forward_split."""
    model = copy.deepcopy(model).eval()
    with quiet_ultralytics():
        model = model.fuse(verbose=False)
    for m in model.modules():
        if isinstance(m, Detect):  # Pose and Segment too
            m.dynamic = dynamic
            m.export = True
            m.format = "onnx"
            m.shape = None  # drop anchors cached for another input size
        elif isinstance(m, C2f):
            m.forward = m.forward_split
    return model


def artifact_cache_dir() -> Path:
    """Where artifacts made at run time go: the harness's default cache (PARITY_CACHE_DIR,
    else .parity_cache/ in the working directory), under ultralytics/."""
    return Path(os.environ.get("PARITY_CACHE_DIR") or Path.cwd() / ".parity_cache") / "ultralytics"


def fixed_export(spec: YoloSpec, height: int, width: int) -> Path:
    """The .onnx of `model.export(format="onnx", imgsz=(height, width))` with Ultralytics'
    defaults (dynamic=False, batch=1): one 1x3xHxW input. Made once per weights and
    library versions, kept in artifact_cache_dir()."""
    digest = hashlib.sha256()
    digest.update(spec.weights.read_bytes() if spec.weights.is_file() else b"")
    digest.update(f"{spec}|{height}x{width}|{ultralytics.__version__}|{torch.__version__}".encode())
    path = artifact_cache_dir() / f"{spec.name}-ultralytics-export-1x3x{height}x{width}-{digest.hexdigest()[:16]}.onnx"
    if path.is_file():
        return path
    from ultralytics.engine.exporter import Exporter

    model = load_trained(spec)
    model.args = {"data": "deploy_parity/scenes (synthetic scenes)"}  # what the exporter's metadata reads
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        # The exporter writes next to the checkpoint it believes it came from.
        model.pt_path = str(Path(scratch) / f"{spec.name}.pt")
        try:
            # ERROR: its warnings (onnxslim not installed, so no graph simplification) are
            # about the export, not about parity.
            with quiet_ultralytics(logging.ERROR):
                produced = Exporter(overrides={"format": "onnx", "imgsz": [height, width], "batch": 1,
                                               "dynamic": False, "device": "cpu"})(model=model)
        except Exception as exc:  # noqa: BLE001 - reported against the artifact it should have made
            raise ArtifactError(path, f"Ultralytics' ONNX export failed: {exc}".splitlines()[0]) from exc
        os.replace(produced, path)  # atomic: a killed export never leaves half a file
    return path

