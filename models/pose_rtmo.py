"""A small one-stage multi-person pose model shaped like RTMO (bug class 1).

Heads at strides 8/16/32 predict, per feature-map cell ("prior"), a score, a box as
distances from the prior's centre, and 17 keypoints as offsets from it.

* Eager mode (the reference) builds priors from each head's actual feature-map
  shape (h, w): row-major, prior = (col*s + (s-1)/2, row*s + (s-1)/2).
* Deploy mode (what gets exported) precomputes `flatten_priors` / `flatten_stride`
  once from a configured `input_size`, ordered (width, height) as in MMDeploy.
  The correct grid is (input_size[1]//s, input_size[0]//s) = (H/s, W/s).
* The `-broken` variant builds it as (input_size[0]//s, input_size[1]//s) = (W/s, H/s):
  the same number of priors, so no shape error, and invisible on square inputs.
"""

from __future__ import annotations

import copy
import functools

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deploy_parity.adapters import MMDeployDetections
from deploy_parity.case import DeployTarget, InputSpec, ModelCase, SizeSpace, ZooEntry
from deploy_parity.compare.instances import Instances
from deploy_parity.scenes.feeds import scene_feed

STRIDES = (8, 16, 32)
NUM_KEYPOINTS = 17
TOPK = 20
WEIGHTS = Path(__file__).with_name("weights") / "pose_rtmo.pt"
SEED = 20261121


def conv_bn_act(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


def downsample_stage(cin: int, cout: int, refine: int) -> nn.Sequential:
    """A stride-2 conv followed by `refine` stride-1 convs (they widen the receptive field)."""
    return nn.Sequential(conv_bn_act(cin, cout, 2), *(conv_bn_act(cout, cout, 1) for _ in range(refine)))


def upsample_to(coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """Nearest upsampling to the finer map's own shape (2x for sides that are multiples
    of 32; by shape, not scale, so odd sizes in eager mode line up too). Nearest copies
    values exactly, so it adds no rounding a backend could do differently."""
    return nn.functional.interpolate(coarse, size=fine.shape[-2:], mode="nearest")


class TinyRTMOPose(nn.Module):
    """Eager reference: priors from the real feature-map shapes."""

    def __init__(self, width: int = 16, num_keypoints: int = NUM_KEYPOINTS, topk: int = TOPK):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.topk = topk
        self.stem = nn.Sequential(conv_bn_act(3, width, 2), conv_bn_act(width, 2 * width, 2))
        # Each stage halves the resolution, then refines at stride 1, and a top-down path
        # hands coarse context back to the finer strides. With one strided conv per stage
        # and no top-down path, the receptive fields were 15/31/63 px at strides 8/16/32:
        # a prior could not see the person (let alone the raised wrist) whose keypoints
        # it regresses. Now stride 32 sees 191 px, and through the top-down path so do
        # strides 16 and 8 (47 and 95 px from their own stages alone).
        self.stage8 = downsample_stage(2 * width, 2 * width, refine=2)
        self.stage16 = downsample_stage(2 * width, 4 * width, refine=1)
        self.stage32 = downsample_stage(4 * width, 4 * width, refine=1)
        self.fuse16 = conv_bn_act(4 * width, 4 * width, 1)
        self.reduce16 = nn.Conv2d(4 * width, 2 * width, 1)
        self.fuse8 = conv_bn_act(2 * width, 2 * width, 1)
        channels_per_prior = 1 + 4 + 3 * num_keypoints  # score, box ltrb, kpt (dx, dy, vis)
        self.heads = nn.ModuleList(nn.Conv2d(c, channels_per_prior, 1) for c in (2 * width, 4 * width, 4 * width))

    def spread_untrained_scores(self) -> None:
        """Only for the untrained fallback (no weights file): random score logits bunch
        near 0, so the top-k cut is a near-tie; spreading them makes selection decisive.
        Trained weights need no such help and never go through this."""
        with torch.no_grad():
            for head in self.heads:
                head.weight[0].mul_(8.0)

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        # uint8 images are 0..255, float images 0..1 (the case's declared convention).
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - 0.45) / 0.25

    def head_maps(self, images: torch.Tensor):
        # Cast to the weights' dtype: under .half() (the torch-cuda-fp16 backend) the
        # network runs in fp16 while normalise() keeps its fp32 arithmetic.
        x = self.stem(self.normalise(images).to(self.heads[0].weight.dtype))
        c8 = self.stage8(x)
        c16 = self.stage16(c8)
        c32 = self.stage32(c16)
        p16 = self.fuse16(c16 + upsample_to(c32, c16))
        p8 = self.fuse8(c8 + upsample_to(self.reduce16(p16), c8))
        return [head(f) for head, f in zip(self.heads, (p8, p16, c32))]

    @staticmethod
    def flatten_maps(maps) -> torch.Tensor:
        # (B, C, h, w) -> (B, h*w, C), row-major over (h, w), concatenated over strides.
        return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)

    def decode(self, flat: torch.Tensor, priors: torch.Tensor, strides: torch.Tensor, batch_gather_bug: bool = False):
        batch = flat.shape[0]
        k = self.num_keypoints
        score_logit = flat[..., 0]
        stride = strides.view(1, -1, 1)
        centre = priors.unsqueeze(0)  # (1, N, 2)
        ltrb = torch.exp(flat[..., 1:5].clamp(max=6.0)) * stride
        boxes = torch.cat([centre - ltrb[..., :2], centre + ltrb[..., 2:]], dim=-1)
        offsets = flat[..., 5 : 5 + 2 * k].reshape(batch, -1, k, 2)
        kpt_xy = centre.unsqueeze(2) + offsets * stride.unsqueeze(-1)
        kpt_score = torch.sigmoid(flat[..., 5 + 2 * k :])
        # Select on logits, not sigmoid scores (sigmoid saturates to exact ties at 1.0),
        # with a tiny per-prior ramp so exactly equal logits rank the same way everywhere.
        ramp = torch.arange(score_logit.shape[1], device=flat.device, dtype=flat.dtype) * 1e-6
        _, index = (score_logit - ramp).topk(self.topk, dim=1)
        if batch_gather_bug:
            # Bug class 3: a gather written for batch 1 reuses image 0's top-k priors.
            index = index[:1].expand(batch, -1)
        top_logit = score_logit.gather(1, index)
        # Gather per image: the batch index is kept by gathering along dim 1 only.
        boxes = boxes.gather(1, index.unsqueeze(-1).expand(-1, -1, 4))
        kpt_xy = kpt_xy.gather(1, index.view(batch, -1, 1, 1).expand(-1, -1, k, 2))
        kpt_score = kpt_score.gather(1, index.unsqueeze(-1).expand(-1, -1, k))
        dets = torch.cat([boxes, torch.sigmoid(top_logit).unsqueeze(-1)], dim=-1)
        keypoints = torch.cat([kpt_xy, kpt_score.unsqueeze(-1)], dim=-1)
        return dets, keypoints

    @staticmethod
    def priors_for_grid(rows: int, cols: int, stride: int) -> torch.Tensor:
        yy, xx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        offset = (stride - 1) / 2.0
        return torch.stack([xx.reshape(-1) * stride + offset, yy.reshape(-1) * stride + offset], dim=-1).float()

    def forward(self, images: torch.Tensor):
        maps = self.head_maps(images)
        priors, strides = [], []
        for m, s in zip(maps, STRIDES):
            rows, cols = m.shape[-2:]  # the actual feature-map shape (h, w)
            priors.append(self.priors_for_grid(rows, cols, s))
            strides.append(torch.full((rows * cols,), float(s)))
        return self.decode(self.flatten_maps(maps), torch.cat(priors), torch.cat(strides))


class TinyRTMOPoseDeploy(nn.Module):
    """Deploy form: priors frozen for `input_size` = (width, height), as MMDeploy does."""

    def __init__(self, model: TinyRTMOPose, input_size, transposed_prior_bug: bool = False,
                 batch_gather_bug: bool = False):
        super().__init__()
        self.model = model
        self.batch_gather_bug = batch_gather_bug
        self.input_size = tuple(input_size)  # (width, height)
        priors, strides = [], []
        for s in STRIDES:
            if transposed_prior_bug:
                rows, cols = input_size[0] // s, input_size[1] // s  # (W/s, H/s): the bug
            else:
                rows, cols = input_size[1] // s, input_size[0] // s  # (H/s, W/s): the fix
            priors.append(TinyRTMOPose.priors_for_grid(rows, cols, s))
            strides.append(torch.full((rows * cols,), float(s)))
        self.register_buffer("flatten_priors", torch.cat(priors), persistent=False)
        self.register_buffer("flatten_stride", torch.cat(strides), persistent=False)

    def forward(self, images: torch.Tensor):
        flat = TinyRTMOPose.flatten_maps(self.model.head_maps(images))
        return self.model.decode(flat, self.flatten_priors, self.flatten_stride, self.batch_gather_bug)


def build_reference() -> TinyRTMOPose:
    torch.manual_seed(SEED)
    model = TinyRTMOPose()
    if WEIGHTS.is_file():
        # Trained by tools/train_pose_rtmo.py (metrics in pose_rtmo.json next to it).
        model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    else:
        model.spread_untrained_scores()
    return model.eval()


@functools.lru_cache(maxsize=1)
def _trained_model() -> TinyRTMOPose:
    return build_reference()


def deploy_builder(transposed_prior_bug: bool = False, batch_gather_bug: bool = False):
    def build_deploy(target: DeployTarget) -> TinyRTMOPoseDeploy:
        input_size = (target.width, target.height)  # MMDeploy's (width, height) order
        # One graph per size: a copy of the model built once (building it again, random
        # init then the weights file, costs ~45 ms per size); each deploy module owns its copy.
        model = copy.deepcopy(_trained_model())
        return TinyRTMOPoseDeploy(model, input_size, transposed_prior_bug, batch_gather_bug).eval()

    return build_deploy


INPUTS = (InputSpec("images", "image", ("float32", "uint8")),)

CASE = ModelCase(
    name="pose-rtmo",
    description="one-stage multi-person pose model, priors at strides 8/16/32 (bug class 1)",
    build_reference=build_reference,
    build_deploy=deploy_builder(transposed_prior_bug=False),
    inputs=INPUTS,
    # A trained person's best priors score ~0.9-1.0 (tests/test_zoo_pose.py); background
    # priors filling the rest of the top-k score far below 0.5. Those are not detections,
    # so one appearing on one side only is no evidence of anything.
    adapter=MMDeployDetections(dets="dets", keypoints="keypoints", score_threshold=0.5, topk=TOPK),
    # Deploy priors are computed with integer division by 32: only multiples of 32 work.
    sizes=SizeSpace(min_side=64, max_side=320, multiple_of=32, max_aspect=4.0, export_height=192, export_width=192),
    max_batch=4,
    spatial_binding="per-size",
    # Scenes with 1-3 people rather than noise: the trained reference then reports real
    # people, and parity is judged on keypoints that mean something. The broken
    # variants inherit this feed through dataclasses.replace.
    make_feed=scene_feed(INPUTS, min_people=1, max_people=3),
)

BROKEN = replace(
    CASE,
    name="pose-rtmo-broken",
    description="pose-rtmo with the transposed deploy prior grid (W/s, H/s)",
    build_deploy=deploy_builder(transposed_prior_bug=True),
    zoo=ZooEntry(default=False),
)

BATCH_BROKEN = replace(
    CASE,
    name="pose-rtmo-batch-broken",
    description="pose-rtmo whose deploy gather forgets the batch index (bug class 3)",
    build_deploy=deploy_builder(batch_gather_bug=True),
    zoo=ZooEntry(default=False),
)

CASES = [CASE, BROKEN, BATCH_BROKEN]
