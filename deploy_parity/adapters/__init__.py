"""Adapters: turn the output formats users have into the harness's `Instances`, so a
case declares its format instead of writing a reader.

  MMDeployDetections  dets (B, K, 5) [+ labels] [+ keypoints (B, K, J, 3)]
                      (deploy_parity/adapters/mmdeploy.py)
  TorchvisionDetection  torchvision's detectors: boxes, labels, scores [+ masks]
                      [+ keypoints, keypoints_scores], eager list of dicts or the
                      exported graph's flat outputs (deploy_parity/adapters/torchvision.py)
  UltralyticsYOLO     YOLO detect / pose / segment: raw head output0 (B, 4+nc+E, N)
                      [+ prototypes output1], decoded and NMSed here; or end-to-end
                      (B, max_det, 6+E) (deploy_parity/adapters/ultralytics.py)

Each adapter lists its outputs (names, kinds, export order), maps a torch module's
(possibly nested) result onto those names, and reads one image into an Instances.
deploy_parity/adapters/nms.py is the deterministic NMS that decoding adapters share.
"""

from deploy_parity.adapters.base import Adapter
from deploy_parity.adapters.mmdeploy import MMDeployDetections
from deploy_parity.adapters.torchvision import TorchvisionDetection
from deploy_parity.adapters.ultralytics import UltralyticsYOLO

__all__ = ["Adapter", "MMDeployDetections", "TorchvisionDetection", "UltralyticsYOLO"]
