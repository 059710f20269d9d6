"""RoIAlign on CPUs as a weighted gather: torchvision's numbers, several times faster.

torchvision's CPU ``roi_align`` walks every region, channel and sample point in one thread over NCHW
maps (0.3-0.5 s for the 1000 proposals of one 480x640 image, a sixth of R50-FPN inference in fp32).
With a fixed sampling ratio every output bin is a weighted sum of at most ``4 * ratio**2`` feature
vectors (the four bilinear neighbours of each sample point), with weights that depend on the box
only. So the pooled features are ``embedding_bag(indices, table, per_sample_weights, mode="sum")``
over the map seen as a table of ``H*W`` channel vectors: one vectorised, multi-threaded torch kernel
whose rows are contiguous in channels-last memory, with a backward pass (scatter-add) for training.
No library ships this form, hence the code; the sample positions, the out-of-map rule and the edge
clamping are computed exactly as torchvision's kernel does (roi_align_kernel.cpp), and the tests
compare both on boxes inside, across and outside the map, aligned or not, forward and backward.

Where it does not apply, torchvision's op runs: other devices, adaptive sampling
(``sampling_ratio <= 0``: a grid per box), and tracing for ONNX export.
"""
from __future__ import annotations

from typing import Dict, List, Tuple, Union

import torch
import torchvision
from torch import Tensor
from torch.nn.modules.utils import _pair
from torchvision.ops import MultiScaleRoIAlign as _TorchvisionMultiScaleRoIAlign
from torchvision.ops import roi_align as _torchvision_roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

__all__ = ["roi_align", "gather_roi_align", "MultiScaleRoIAlign"]


def _axis(start: Tensor, length: Tensor, bins: int, grid: int, size: int):
    """Sample positions of one axis, [R, bins * grid], with torchvision's arithmetic; returns the low
    and high neighbour, their weights (zero for a sample outside the map)."""
    dtype = start.dtype
    bin_size = length / bins
    b = torch.arange(bins, dtype=dtype, device=start.device)
    i = torch.arange(grid, dtype=dtype, device=start.device) + 0.5
    # yy = roi_start + ph * bin_size + (iy + .5) * bin_size / grid, left to right as in the kernel
    pos = (start[:, None, None] + b[None, :, None] * bin_size[:, None, None]) \
        + (i[None, None, :] * bin_size[:, None, None]) / grid
    pos = pos.reshape(len(start), bins * grid)
    inside = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.to(torch.int64)  # truncation, as (int)y: pos >= 0 here
    edge = low >= size - 1
    low = torch.where(edge, torch.full_like(low, size - 1), low)
    high = torch.where(edge, low, low + 1)
    pos = torch.where(edge, low.to(dtype), pos)
    frac = pos - low.to(dtype)
    keep = inside.to(dtype)
    return low, high, (1 - frac) * keep, frac * keep


def gather_roi_align(input: Tensor, rois: Tensor, output_size, spatial_scale: float = 1.0,
                     sampling_ratio: int = 2, aligned: bool = False) -> Tensor:
    """torchvision's ``roi_align`` for ``sampling_ratio > 0`` as one ``embedding_bag`` (module
    docstring). ``input`` [N, C, H, W] (fastest in channels-last), ``rois`` [R, 5] (batch index, x1,
    y1, x2, y2); returns [R, C, PH, PW] in ``input``'s dtype and memory layout (channels-last as
    computed, or made contiguous for an NCHW map, as torchvision's op returns it)."""
    return _layout_of(_gather_channels_last(input, rois, output_size, spatial_scale, sampling_ratio, aligned), input)


def _gather_channels_last(input: Tensor, rois: Tensor, output_size, spatial_scale: float,
                          sampling_ratio: int, aligned: bool = False) -> Tensor:
    """:func:`gather_roi_align`'s RoIs in channels-last memory, whatever ``input``'s layout."""
    if sampling_ratio <= 0:
        raise ValueError("gather_roi_align needs a fixed sampling_ratio > 0 (adaptive sampling: torchvision's roi_align)")
    ph, pw = _pair(output_size)
    n, c, h, w = input.shape
    num = rois.shape[0]
    if num == 0:
        return input.new_zeros((0, c, ph, pw))
    out_dtype = input.dtype
    table_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    # [N*H*W, C]: a view of a channels-last map; torchvision computes lower precisions in float32 too
    table = input.permute(0, 2, 3, 1).reshape(n * h * w, c).to(table_dtype)
    with torch.no_grad():  # the weights depend on the boxes only; torchvision gives boxes no gradient
        boxes = rois.detach().to(table_dtype)
        offset = 0.5 if aligned else 0.0
        x1, y1 = boxes[:, 1] * spatial_scale - offset, boxes[:, 2] * spatial_scale - offset
        x2, y2 = boxes[:, 3] * spatial_scale - offset, boxes[:, 4] * spatial_scale - offset
        width, height = x2 - x1, y2 - y1
        if not aligned:
            width, height = width.clamp(min=1.0), height.clamp(min=1.0)
        g = sampling_ratio
        ylo, yhi, wylo, wyhi = _axis(y1, height, ph, g, h)  # [R, PH*g]
        xlo, xhi, wxlo, wxhi = _axis(x1, width, pw, g, w)  # [R, PW*g]
        base = boxes[:, 0].to(torch.int64)[:, None, None] * (h * w)
        rows = [ylo, ylo, yhi, yhi]
        cols = [xlo, xhi, xlo, xhi]
        wrows = [wylo, wylo, wyhi, wyhi]
        wcols = [wxlo, wxhi, wxlo, wxhi]
        index = torch.stack([base + r[:, :, None] * w + cl[:, None, :] for r, cl in zip(rows, cols)], -1)
        weight = torch.stack([wr[:, :, None] * wc[:, None, :] for wr, wc in zip(wrows, wcols)], -1) / (g * g)
        # [R, PH, g, PW, g, 4] -> one bag per output bin of g*g*4 (row, weight) pairs
        index = index.view(num, ph, g, pw, g, 4).permute(0, 1, 3, 2, 4, 5).reshape(num * ph * pw, g * g * 4)
        weight = weight.view(num, ph, g, pw, g, 4).permute(0, 1, 3, 2, 4, 5).reshape(num * ph * pw, g * g * 4)
    out = torch.nn.functional.embedding_bag(index, table, per_sample_weights=weight, mode="sum")
    return out.view(num, ph, pw, c).permute(0, 3, 1, 2).to(out_dtype)


def _layout_of(pooled: Tensor, input: Tensor) -> Tensor:
    """``pooled`` (channels-last memory) in ``input``'s layout. An NCHW network handed channels-last
    RoIs runs its heads channels-last, and the gradient of a 1x1 convolution's weight then comes out
    with channels-last strides: DDP warns that it does not match its bucket ("Grad strides do not
    match bucket view strides", pytorch#47163) and copies it every step."""
    if input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous():
        return pooled
    return pooled.contiguous()


def _gather_applies(input: Tensor, sampling_ratio: int) -> bool:
    return (input.device.type == "cpu" and sampling_ratio > 0 and input.dtype != torch.float16
            and not torchvision._is_tracing() and not torch.jit.is_scripting())


def roi_align(input: Tensor, boxes: Union[Tensor, List[Tensor]], output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """``torchvision.ops.roi_align``, computed by :func:`gather_roi_align` where it applies (CPU, a
    fixed sampling ratio, not tracing), by torchvision's op elsewhere."""
    if not _gather_applies(input, sampling_ratio):
        return _torchvision_roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    rois = boxes if isinstance(boxes, Tensor) else _convert_to_roi_format(boxes)
    return gather_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)


class MultiScaleRoIAlign(_TorchvisionMultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same levels, same arguments, same state), each level
    pooled by :func:`roi_align` above; tracing (ONNX export) runs torchvision's own forward."""

    def forward(self, x: Dict[str, Tensor], boxes: List[Tensor], image_shapes: List[Tuple[int, int]]) -> Tensor:
        x_filtered = _filter_input(x, self.featmap_names)
        if not _gather_applies(x_filtered[0], self.sampling_ratio):
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(x_filtered, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        if len(x_filtered) == 1:
            return gather_roi_align(x_filtered[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        ph, pw = _pair(self.output_size)
        first = x_filtered[0]
        result = first.new_zeros((len(rois), ph, pw, first.shape[1]))  # channels-last, as the levels come
        for level, (feature, scale) in enumerate(zip(x_filtered, self.scales)):
            idx = torch.where(levels == level)[0]
            if idx.numel():
                pooled = _gather_channels_last(feature, rois[idx], (ph, pw), scale, self.sampling_ratio)
                result[idx] = pooled.permute(0, 2, 3, 1).to(result.dtype)
        return _layout_of(result.permute(0, 3, 1, 2), first)
