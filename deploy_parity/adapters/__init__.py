"""Adapters: turn the output formats users have into the harness's `Instances`, so a
case declares its format instead of writing a reader.

  MMDeployDetections  dets (B, K, 5) [+ labels] [+ keypoints (B, K, J, 3)]
                      (deploy_parity/adapters/mmdeploy.py)

Each adapter lists its outputs (names, kinds, export order), maps a torch module's
(possibly nested) result onto those names, and reads one image into an Instances.
deploy_parity/adapters/nms.py is the deterministic NMS that decoding adapters share.
"""

from deploy_parity.adapters.base import Adapter
from deploy_parity.adapters.mmdeploy import MMDeployDetections

__all__ = ["Adapter", "MMDeployDetections"]
