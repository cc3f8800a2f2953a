"""Keypoint R-CNN heatmap decoding, twice: the eager reference and an exportable form.

Both follow torchvision's `heatmaps_to_keypoints` (bug class 4): each ROI's (K, 56, 56)
heatmaps are resized bicubically to the ROI's own size (ceil(h), ceil(w)); the argmax
cell (x_int, y_int) gives x = (x_int + 0.5) * w / ceil(w) + x1 (likewise y), and the
keypoint's score is the heatmap value at that cell. Both also return the *peak gap*:
how far the best cell beats the second best. Where the gap is tiny, argmax may pick
either cell under rounding differences between runtimes, so a comparator reads a jump
there as a tie, not an error (deploy_parity.compare.keypoints).

* `decode_heatmaps_eager`: a Python loop over ROIs with F.interpolate, bit-for-bit what
  torchvision computes in eager mode. The reference model uses it.
* `decode_heatmaps_exportable`: no loop and no data-dependent Resize. The bicubic resize
  is separable, so it is written as two small matrix products whose weights are built
  from the ROI sizes with plain tensor ops; the resized maps of all ROIs share one grid
  as large as the largest ROI, and cells outside an ROI's own size are masked. This
  exports to ONNX as ordinary MatMul/ArgMax/TopK nodes (torchvision's own ONNX path is
  a Loop with a per-iteration dynamic Resize, which TensorRT handles badly) and agrees
  with the eager form up to float rounding.
* `clamp_to_image`: the clip to the image that deploy pipelines add after decoding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# torch's (and ONNX Resize's default) bicubic convolution coefficient.
CUBIC_A = -0.75

# The value given to cells that do not exist (outside an ROI's own size, or the
# runner-up of a one-cell map), so they never win argmax and make the peak gap huge
# but finite (reports write JSON; inf is not JSON). Taken from the maps' own dtype:
# float32's minimum does not fit in float16 (torch-cuda-fp16 / autocast runs).
def no_cell(like: torch.Tensor) -> float:
    return torch.finfo(like.dtype).min


def roi_sizes(rois: torch.Tensor):
    """(widths, heights, ceil(widths), ceil(heights)) of (R, 4) xyxy ROIs, as torchvision
    computes them: sides clamped to at least one pixel."""
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    return widths, heights, widths.ceil(), heights.ceil()


def peak_gap(flat_maps: torch.Tensor) -> torch.Tensor:
    """Best minus second-best value along the last axis; huge when there is no second."""
    if flat_maps.shape[-1] < 2:
        # A huge finite gap in the maps' own dtype (best - min would overflow float16).
        return torch.full_like(flat_maps[..., 0], torch.finfo(flat_maps.dtype).max)
    top2 = flat_maps.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


# An ROI side this close to an integer sits on a decision boundary of the decoding
# itself: ceil() of it may come out one cell different on another runtime (box
# coordinates differ by ~6e-5 px in fp32), which changes the resize grid and moves every
# keypoint of the ROI by a fraction of a cell (0.3 px seen in a nightly run). Its gaps
# are reported as 0: ties, so such a jump is ambiguous, not a failure.
CEIL_BOUNDARY_PX = 1e-3


def on_ceil_boundary(widths: torch.Tensor, heights: torch.Tensor) -> torch.Tensor:
    """(R,) True where an ROI's width or height lies within CEIL_BOUNDARY_PX of an integer."""
    def near_integer(side):
        return (side - side.round()).abs() < CEIL_BOUNDARY_PX

    return near_integer(widths) | near_integer(heights)


def decode_heatmaps_eager(maps: torch.Tensor, rois: torch.Tensor):
    """torchvision's eager decoding of (R, K, M, M) heatmaps over (R, 4) ROIs.

    Returns keypoints (R, K, 3) = x, y, heatmap score, and peak_gap (R, K).
    """
    num_rois, num_keypoints = maps.shape[:2]
    widths, heights, widths_ceil, heights_ceil = roi_sizes(rois)
    keypoints = maps.new_zeros((num_rois, num_keypoints, 3))
    gaps = maps.new_zeros((num_rois, num_keypoints))
    for i in range(num_rois):
        roi_width, roi_height = int(widths_ceil[i].item()), int(heights_ceil[i].item())
        roi_map = F.interpolate(maps[i][:, None], size=(roi_height, roi_width), mode="bicubic",
                                align_corners=False)[:, 0]
        flat = roi_map.reshape(num_keypoints, -1)
        position = flat.argmax(dim=1)
        x_int = position % roi_width
        y_int = torch.div(position - x_int, roi_width, rounding_mode="floor")
        # The same float operations, in the same order, as torchvision.
        keypoints[i, :, 0] = (x_int.float() + 0.5) * (widths[i] / roi_width) + rois[i, 0]
        keypoints[i, :, 1] = (y_int.float() + 0.5) * (heights[i] / roi_height) + rois[i, 1]
        keypoints[i, :, 2] = roi_map[torch.arange(num_keypoints), y_int, x_int]
        gaps[i] = peak_gap(flat)
    gaps = torch.where(on_ceil_boundary(widths, heights)[:, None], torch.zeros_like(gaps), gaps)
    return keypoints, gaps


def _cubic_near(t: torch.Tensor) -> torch.Tensor:
    """Bicubic convolution weight for a tap at distance t in [0, 1]."""
    return ((CUBIC_A + 2) * t - (CUBIC_A + 3)) * t * t + 1


def _cubic_far(t: torch.Tensor) -> torch.Tensor:
    """Bicubic convolution weight for a tap at distance t in [1, 2]."""
    return ((CUBIC_A * t - 5 * CUBIC_A) * t + 8 * CUBIC_A) * t - 4 * CUBIC_A


def bicubic_resize_weights(out_sizes: torch.Tensor, in_size: int, extent) -> torch.Tensor:
    """(R, extent, in_size) matrices W with W[r] @ v = v resized bicubically to out_sizes[r].

    Rows at or beyond out_sizes[r] are zero. Mirrors torch's CPU kernel (align_corners
    False): source = (i + 0.5) * in / out - 0.5; the four taps floor(source) - 1 ..
    floor(source) + 2 are clamped into the input, and clamped taps add up.
    """
    dtype = torch.float32
    rows = torch.arange(extent, dtype=dtype, device=out_sizes.device)  # (S,)
    scale = in_size / out_sizes.to(dtype)  # (R,)
    source = (rows[None, :] + 0.5) * scale[:, None] - 0.5  # (R, S)
    base = source.floor().clamp(max=in_size - 1)
    t = (source - base).clamp(0.0, 1.0)
    taps = torch.stack([_cubic_far(t + 1), _cubic_near(t), _cubic_near(1 - t), _cubic_far(2 - t)], dim=-1)
    offsets = torch.arange(-1, 3, dtype=dtype, device=out_sizes.device)  # (4,)
    tap_index = (base[..., None] + offsets).clamp(0, in_size - 1)  # (R, S, 4)
    columns = torch.arange(in_size, dtype=dtype, device=out_sizes.device)  # (in,)
    one_hot = (tap_index[..., None] == columns).to(dtype)  # (R, S, 4, in)
    weights = (taps[..., None] * one_hot).sum(dim=2)  # (R, S, in)
    inside = (rows[None, :] < out_sizes.to(dtype)[:, None]).to(dtype)  # (R, S)
    return weights * inside[..., None]


def _grid_extent(sizes: torch.Tensor, minimum: float) -> torch.Tensor:
    """The largest of the ROIs' sizes, at least `minimum`, as an int64 tensor: the
    extent is data, never a Python int frozen at export time."""
    return torch.cat([sizes, sizes.new_full((1,), minimum)]).max().to(torch.int64)


def decode_heatmaps_exportable(maps: torch.Tensor, rois: torch.Tensor):
    """The same decoding as `decode_heatmaps_eager`, as loop-free tensor code.

    Every ROI's resized maps are laid out on one grid as large as the largest ROI;
    cells beyond an ROI's own size are masked.
    """
    num_rois, num_keypoints, map_height, map_width = maps.shape
    widths, heights, widths_ceil, heights_ceil = roi_sizes(rois)
    out_rows, out_cols = heights_ceil, widths_ceil
    # At least two cells, so the runner-up exists (a masked one for a one-cell map, as
    # in the eager form) and zero ROIs still give a valid, empty grid.
    row_extent, col_extent = _grid_extent(out_rows, 1.0), _grid_extent(out_cols, 2.0)
    # In the maps' dtype: the weights come out float32, the maps are float16 under
    # torch-cuda-fp16 (matmul refuses the mix; seen on an H200).
    row_weights = bicubic_resize_weights(out_rows, map_height, row_extent).to(maps.dtype)  # (R, S_r, M)
    col_weights = bicubic_resize_weights(out_cols, map_width, col_extent).to(maps.dtype)  # (R, S_c, M)
    # (R, 1, S_r, M) @ (R, K, M, M) @ (R, 1, M, S_c) -> (R, K, S_r, S_c)
    roi_maps = row_weights[:, None] @ maps @ col_weights.transpose(1, 2)[:, None]
    row_inside = torch.arange(row_extent, dtype=maps.dtype, device=maps.device)[None, :] < out_rows[:, None]
    col_inside = torch.arange(col_extent, dtype=maps.dtype, device=maps.device)[None, :] < out_cols[:, None]
    inside = row_inside[:, None, :, None] & col_inside[:, None, None, :]  # (R, 1, S_r, S_c)
    roi_maps = torch.where(inside, roi_maps, torch.full_like(roi_maps, no_cell(roi_maps)))
    # (R, K, S_r * S_c), row-major as in the eager form. An explicit shape, not -1:
    # ONNX Runtime cannot infer a -1 next to a zero-sized axis (zero detections).
    flat = roi_maps.reshape(num_rois, num_keypoints, row_extent * col_extent)
    position = flat.argmax(dim=2)
    x_int = position % col_extent
    y_int = torch.div(position - x_int, col_extent, rounding_mode="floor")
    top2 = flat.topk(2, dim=2).values
    x = (x_int.to(maps.dtype) + 0.5) * (widths / widths_ceil)[:, None] + rois[:, None, 0]
    y = (y_int.to(maps.dtype) + 0.5) * (heights / heights_ceil)[:, None] + rois[:, None, 1]
    keypoints = torch.stack([x, y, top2[..., 0]], dim=-1)
    gaps = top2[..., 0] - top2[..., 1]
    return keypoints, torch.where(on_ceil_boundary(widths, heights)[:, None], torch.zeros_like(gaps), gaps)


def clamp_to_image(keypoints: torch.Tensor, image_size) -> torch.Tensor:
    """Keypoints (R, K, 3) with x clamped to [0, width] and y to [0, height].

    image_size is (height, width), as everywhere in the harness; pass the input's traced
    shape, never Python ints. Deploy pipelines clip decoded keypoints to the image
    (MMDeploy's do); for keypoints decoded inside boxes clipped to the image it changes
    nothing, and it is where an image size in (width, height) order does harm: square
    images hide it, and on a W > H image every keypoint right of x = H is pulled back.
    """
    height, width = image_size
    zero = torch.zeros((), dtype=keypoints.dtype, device=keypoints.device)
    x = torch.minimum(torch.maximum(keypoints[..., 0], zero), torch.as_tensor(width, dtype=keypoints.dtype))
    y = torch.minimum(torch.maximum(keypoints[..., 1], zero), torch.as_tensor(height, dtype=keypoints.dtype))
    return torch.stack([x, y, keypoints[..., 2]], dim=-1)
