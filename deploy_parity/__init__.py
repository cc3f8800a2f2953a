"""deploy_parity: does the exported model still give the reference PyTorch answers?

The public front. A user's cases module needs only these names:

    from deploy_parity import ModelCase, InputSpec, SizeSpace, adapters, scene_feed

scene_feed(inputs) is a make_feed rendering scenes (people with keypoints, blocks, discs)
on which a detector finds something: random noise leaves most detector cases vacuous.

Importing it loads no torch, ONNX Runtime or TensorRT; backends import theirs when used.
"""

__version__ = "0.1.0"

from deploy_parity import adapters
# What a user's cases module needs, and nothing else: the zoo's own ZooEntry and the
# harness's internals are imported from their modules by those who need them.
from deploy_parity.case import DeployTarget, InputSpec, Judging, ModelCase, OutputSpec, SizeSpace
from deploy_parity.compare.instances import Instances
from deploy_parity.compare.tolerances import Tolerance
from deploy_parity.scenes.feeds import scene_feed

__all__ = [
    "DeployTarget",
    "InputSpec",
    "Instances",
    "Judging",
    "ModelCase",
    "OutputSpec",
    "SizeSpace",
    "Tolerance",
    "adapters",
    "scene_feed",
]
