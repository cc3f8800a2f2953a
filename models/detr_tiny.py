"""A small DETR-style detector shaped like RT-DETR's deploy graph (bug class 2).

Deploy graph: `images` float32 (N, 3, H, W) in [0, 1] and `orig_target_sizes` (N, 2) =
[w, h] integer -> `labels` (N, K) int64, `boxes` (N, K, 4) xyxy pixels, `scores` (N, K).
Post-processing lives inside the model, as in RT-DETR: boxes cxcywh -> xyxy scaled by
[w, h, w, h]; top-K over the sigmoid scores of every query x class pair; label = pair
index mod num_classes (+1, to match the scenes' labels 1 person, 2 block, 3 disc).

* The reference is the same model in eager PyTorch, taking int64 or int32 sizes.
* The `-broken` variant reproduces a TensorRT engine whose `orig_target_sizes` binding
  is int32, fed the caller's int64 buffer by raw pointer: little-endian int64 values
  v0..v(2N-1) read as int32 words are [v0, 0, v1, 0, ...] and the binding takes the
  first 2N words. For N = 1 the sizes become [[w, 0]] (every y multiplied by 0); for
  N > 1 rows are scrambled. It is written with ordinary tensor ops, so the graph exports
  and runs in ONNX Runtime and in torch like the real engine would have run.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from deploy_parity.case import DeployTarget, InputSpec, Judging, ModelCase, OutputSpec, SizeSpace, ZooEntry
from deploy_parity.compare.instances import Instances
from deploy_parity.scenes.feeds import scene_feed

NUM_CLASSES = 3  # person, block, disc; reported as labels 1..3 like the scenes
NUM_QUERIES = 16
TOPK = 10
D_MODEL = 64
NUM_HEADS = 4
NUM_DECODER_LAYERS = 2
BACKBONE_CHANNELS = (16, 32, 48, 64)  # one stride-2 stage each: stride 16 overall
SCORE_THRESHOLD = 0.3
# Per cross-attention head: how sharply it is pulled towards the query's reference box.
HEAD_SHARPNESS = (0.0, 0.25, 1.0, 2.0)
WEIGHTS = Path(__file__).with_name("weights") / "detr_tiny.pt"
SEED = 20261122

# Added to the selection key per query x class pair, so exactly equal logits rank the
# same way in every backend (topk implementations break exact ties differently). Far
# below any real logit gap of a trained model, above float32 rounding of logits ~|10|.
TIE_BREAK_STEP = 1e-5


def conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class StrideSixteenBackbone(nn.Module):
    """Four stride-2 stages (a strided conv, then a plain conv except at full resolution
    where it would cost a quarter of the model), then a 1x1 to d_model."""

    def __init__(self, channels=BACKBONE_CHANNELS, d_model: int = D_MODEL):
        super().__init__()
        stages, cin = [], 3
        for index, cout in enumerate(channels):
            layers = [conv_bn_relu(cin, cout, 2)] + ([conv_bn_relu(cout, cout, 1)] if index else [])
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.project = nn.Conv2d(cin, d_model, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.stages(images))


def token_centres(features: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B, h*w, 2): each feature cell's centre (x, y) as a fraction of the map.

    Computed from the feature map itself (a cumulative sum of ones, not a constant
    table), so the exported graph stays dynamic in H and W, and normalised by the map's
    extent, so positions mean the same fraction of the image at every input size.
    """
    ones = torch.ones_like(features[:, 0])  # (B, h, w)
    y = ones.cumsum(1)
    x = ones.cumsum(2)
    y = (y - 0.5) / y[:, -1:, :]
    x = (x - 0.5) / x[:, :, -1:]
    return torch.stack([x, y], dim=-1).flatten(1, 2)


def sine_position_encoding(centres: torch.Tensor, d_model: int, temperature: float = 10000.0) -> torch.Tensor:
    """(B, S, 2) normalised (x, y) -> (B, S, d_model), DETR's sine encoding of (y, x)."""
    half = d_model // 2
    angles = centres * (2 * math.pi)
    return torch.cat([_sine_features(angles[..., 1], half, temperature),
                      _sine_features(angles[..., 0], half, temperature)], dim=-1)


def _sine_features(position: torch.Tensor, num_features: int, temperature: float) -> torch.Tensor:
    """(...,) positions -> (..., num_features): interleaved sin/cos at geometric frequencies."""
    exponent = 2 * (torch.arange(num_features, dtype=torch.float32, device=position.device) // 2) / num_features
    angles = position.unsqueeze(-1) / (temperature**exponent)
    return torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)


def anchor_grid_logits(num_queries: int, size: float = 0.3) -> torch.Tensor:
    """(Q, 4) inverse-sigmoid cxcywh anchors on a square grid: each query starts out
    responsible for one region, which makes Hungarian training converge in minutes."""
    side = math.ceil(math.sqrt(num_queries))
    index = torch.arange(num_queries, dtype=torch.float32)
    cx = (index % side + 0.5) / side
    cy = (torch.div(index, side, rounding_mode="floor") + 0.5) / side
    boxes = torch.stack([cx, cy, torch.full_like(cx, size), torch.full_like(cx, size)], dim=-1)
    return torch.logit(boxes.clamp(1e-4, 1 - 1e-4))


class DecoderLayer(nn.Module):
    """DETR's decoder layer (post-norm): query self-attention, cross-attention to the image,
    feed-forward. Image positions go into the keys (where to look) and, through their own
    projection, into the values (so what a query reads says where it looked), which with
    the box-attention bias below lets a few CPU minutes of training localise objects.

    Not nn.TransformerDecoderLayer: its cross-attention passes the memory as both key and
    value, and nn.MultiheadAttention's packed key/value projection (taken when key is
    value) exports through TorchScript with the memory length frozen to the export
    sample's token count, so the graph fails at any other image size. Separate key and
    value tensors take the separate projections, which trace dynamically.
    """

    def __init__(self, d_model: int, num_heads: int, feedforward: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.value_position = nn.Linear(d_model, d_model)
        self.feedforward = nn.Sequential(nn.Linear(d_model, feedforward), nn.ReLU(), nn.Linear(feedforward, d_model))
        self.norm_self = nn.LayerNorm(d_model)
        self.norm_cross = nn.LayerNorm(d_model)
        self.norm_feedforward = nn.LayerNorm(d_model)

    def forward(self, hidden, query_pos, memory, memory_pos, attention_bias):
        q = hidden + query_pos
        hidden = self.norm_self(hidden + self.self_attn(q, q, hidden, need_weights=False)[0])
        key, value = memory + memory_pos, memory + self.value_position(memory_pos)
        attended = self.cross_attn(hidden + query_pos, key, value, attn_mask=attention_bias, need_weights=False)[0]
        hidden = self.norm_cross(hidden + attended)
        return self.norm_feedforward(hidden + self.feedforward(hidden))


def box_attention_bias(reference_boxes: torch.Tensor, centres: torch.Tensor, head_sharpness: torch.Tensor):
    """(B*heads, Q, S) additive cross-attention bias: minus the squared distance of each
    token from each query's reference box centre, in units of the box's half size, times
    a per-head sharpness (0 = a global head). Queries start out reading their own region,
    as in SMCA-DETR, instead of learning where to look from scratch."""
    box = reference_boxes.unsqueeze(2)  # (B, Q, 1, 4) cxcywh
    offset = (centres.unsqueeze(1) - box[..., :2]) / (0.5 * box[..., 2:] + 1e-2)  # (B, Q, S, 2)
    distance = (offset**2).sum(-1)  # (B, Q, S)
    bias = -head_sharpness.view(1, -1, 1, 1) * distance.unsqueeze(1)  # (B, heads, Q, S)
    return bias.flatten(0, 1)


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    centre, size = boxes[..., :2], boxes[..., 2:]
    return torch.cat([centre - 0.5 * size, centre + 0.5 * size], dim=-1)


class TinyDETR(nn.Module):
    """Eager reference: backbone, sine positions, a 2-layer decoder over learned anchor
    queries with iterative box refinement, class and box heads, RT-DETR post-processing."""

    def __init__(self, num_classes: int = NUM_CLASSES, num_queries: int = NUM_QUERIES, topk: int = TOPK,
                 d_model: int = D_MODEL):
        super().__init__()
        self.num_classes = num_classes
        self.topk = topk
        self.backbone = StrideSixteenBackbone(d_model=d_model)
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(d_model, NUM_HEADS, 2 * d_model) for _ in range(NUM_DECODER_LAYERS)
        )
        self.register_buffer("head_sharpness", torch.tensor(HEAD_SHARPNESS), persistent=False)
        self.query_content = nn.Parameter(torch.randn(num_queries, d_model) * 0.1)
        self.anchor_logits = nn.Parameter(anchor_grid_logits(num_queries))
        # Each query's position embedding comes from its anchor box (as DAB-DETR's anchor queries).
        self.anchor_embed = nn.Sequential(nn.Linear(4, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        self.class_head = nn.Linear(d_model, num_classes)
        self.box_head = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model), nn.ReLU(),
                                      nn.Linear(d_model, 4))
        with torch.no_grad():
            # Focal-loss prior: every class starts at probability 0.01, so early training
            # is not swamped by the many background queries.
            self.class_head.bias.fill_(-math.log((1 - 0.01) / 0.01))
            self.box_head[-1].weight.zero_()
            self.box_head[-1].bias.zero_()

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        # In the images' own float dtype: float16 under torch-cuda-fp16 (.float() here made
        # float32 activations meet float16 weights).
        images = images if images.is_floating_point() else images.float()
        return (images - 0.45) / 0.25

    def per_layer_predictions(self, images: torch.Tensor) -> list:
        """[(class logits (B, Q, C), boxes cxcywh normalised (B, Q, 4))] after every decoder
        layer: training uses them all (auxiliary losses), inference the last."""
        features = self.backbone(self.normalise(images))
        memory = features.flatten(2).transpose(1, 2)  # (B, h*w, D)
        centres = token_centres(features)
        # Computed in float32, then in the activations' dtype (float16 under torch-cuda-fp16).
        memory_pos = sine_position_encoding(centres, memory.shape[-1]).to(memory.dtype)
        batch = features.shape[0]
        query_pos = self.anchor_embed(torch.sigmoid(self.anchor_logits)).unsqueeze(0)  # (1, Q, D)
        hidden = self.query_content.unsqueeze(0).expand(batch, -1, -1)
        predictions = []
        reference = self.anchor_logits.unsqueeze(0)  # (1, Q, 4) box logits each layer refines
        for layer in self.decoder_layers:
            bias = box_attention_bias(torch.sigmoid(reference).expand(batch, -1, -1), centres, self.head_sharpness)
            hidden = layer(hidden, query_pos, memory, memory_pos, bias)
            box_logits = reference + self.box_head(hidden)
            predictions.append((self.class_head(hidden), torch.sigmoid(box_logits)))
            # Iterative refinement (Deformable DETR): the next layer corrects this layer's
            # boxes; detached so each layer's loss trains its own correction.
            reference = box_logits.detach()
        return predictions

    def postprocess(self, class_logits: torch.Tensor, boxes: torch.Tensor, orig_target_sizes: torch.Tensor):
        """RT-DETR post-processing: (labels (B, K) int64, boxes (B, K, 4) xyxy pixels, scores (B, K))."""
        scale = orig_target_sizes.to(boxes.dtype).repeat(1, 2).unsqueeze(1)  # (B, 1, 4) = [w, h, w, h]
        boxes_xyxy = box_cxcywh_to_xyxy(boxes) * scale
        flat_logits = class_logits.flatten(1)  # (B, Q*C), pair index = query * C + class
        # Select on logits, not sigmoid scores: sigmoid saturates to exact ties at 1.0.
        tie_break = torch.arange(flat_logits.shape[1], dtype=flat_logits.dtype, device=flat_logits.device)
        _, index = (flat_logits - tie_break * TIE_BREAK_STEP).topk(self.topk, dim=1)
        scores = torch.sigmoid(flat_logits.gather(1, index))
        labels = index % self.num_classes + 1
        query = torch.div(index, self.num_classes, rounding_mode="floor")
        top_boxes = boxes_xyxy.gather(1, query.unsqueeze(-1).expand(-1, -1, 4))
        return labels, top_boxes, scores

    def forward(self, images: torch.Tensor, orig_target_sizes: torch.Tensor):
        class_logits, boxes = self.per_layer_predictions(images)[-1]
        return self.postprocess(class_logits, boxes, orig_target_sizes)


def int64_read_as_int32(sizes_int64: torch.Tensor) -> torch.Tensor:
    """What an int32 binding sees when handed an int64 (N, 2) buffer, on a little-endian host.

    Each non-negative int64 v < 2**31 is the int32 word pair [v, 0]; the binding reads the
    first 2N words of the 4N the buffer holds: [[v0, 0], [v1, 0], ...].
    """
    values = sizes_int64.reshape(-1)  # v0..v(2N-1)
    words = torch.stack([values, torch.zeros_like(values)], dim=1).reshape(2, -1)  # 4N words as (2, 2N)
    return words[0].reshape(-1, 2).to(torch.int32)  # the first 2N words, as the binding's (N, 2)


class TinyDETRDeploy(nn.Module):
    """What gets exported: the model itself, optionally behind the mis-bound size input."""

    def __init__(self, model: TinyDETR, int32_binding_fed_int64: bool = False):
        super().__init__()
        self.model = model
        self.int32_binding_fed_int64 = int32_binding_fed_int64

    def forward(self, images: torch.Tensor, orig_target_sizes: torch.Tensor):
        if self.int32_binding_fed_int64:
            orig_target_sizes = int64_read_as_int32(orig_target_sizes)
        return self.model(images, orig_target_sizes)


def build_reference() -> TinyDETR:
    torch.manual_seed(SEED)
    model = TinyDETR()
    if WEIGHTS.is_file():
        model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


def deploy_builder(int32_binding: bool = False):
    def build_deploy(target: DeployTarget) -> TinyDETRDeploy:
        # Only the int64 graph misreads its sizes: an int32 feed matches the int32 binding.
        sizes_dtype = target.dtypes[1]
        return TinyDETRDeploy(build_reference(), int32_binding and sizes_dtype == "int64").eval()

    return build_deploy


def to_instances(outputs: dict, index: int, image_size) -> Instances:
    return Instances(boxes=outputs["boxes"][index], scores=outputs["scores"][index], labels=outputs["labels"][index],
                     image_size=image_size)


IMAGES = InputSpec("images", "image", ("float32",))
# RT-DETR's ONNX graph takes int64 sizes; an int32 graph serves callers that hold int32.
SIZES = InputSpec("orig_target_sizes", "image_size_wh", ("int64", "int32"))

CASE = ModelCase(
    name="detr-tiny",
    description="DETR-style detector, RT-DETR deploy graph with an integer size input (bug class 2)",
    build_reference=build_reference,
    build_deploy=deploy_builder(int32_binding=False),
    inputs=(IMAGES, SIZES),
    outputs=(
        OutputSpec("labels", "labels", "(N, K) int64, 1 person, 2 block, 3 disc"),
        OutputSpec("boxes", "boxes", "(N, K, 4) x1 y1 x2 y2 in orig_target_sizes pixels"),
        OutputSpec("scores", "scores", "(N, K) sigmoid score of each kept query x class pair"),
    ),
    # Positions are computed from the feature map and convolutions pad: any size works.
    sizes=SizeSpace(min_side=64, max_side=256, multiple_of=1, max_aspect=4.0, export_height=128, export_width=128),
    to_instances=to_instances,
    max_batch=4,
    spatial_binding="dynamic",
    judging=Judging(score_threshold=SCORE_THRESHOLD, topk=TOPK),
    make_feed=scene_feed((IMAGES, SIZES), min_people=1),
)

# The engine's binding is int32, which is what its smoke test fed (so int32 is its
# default, and the square batch-1 control passes); like the production caller, the
# harness may also hand it int64, which it reads without complaint: the bug.
BROKEN_SIZES = InputSpec("orig_target_sizes", "image_size_wh", ("int32", "int64"))

BROKEN = replace(
    CASE,
    name="detr-tiny-broken",
    description="detr-tiny whose int32 size binding reads an int64 feed's bytes ([[w, h]] -> [[w, 0]])",
    build_deploy=deploy_builder(int32_binding=True),
    inputs=(IMAGES, BROKEN_SIZES),
    make_feed=scene_feed((IMAGES, BROKEN_SIZES), min_people=1),
    zoo=ZooEntry(default=False),
)

CASES = [CASE, BROKEN]
