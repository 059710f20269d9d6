"""Classification scores under the paper's three ways of testing, and top-k accuracy.

* centre crop: the logits of one crop;
* 10-crop (AlexNet's, used in the paper's Table 3): the softmax scores of the four corner crops,
  the centre crop and their horizontal flips, averaged;
* fully-convolutional multi-scale (paper §3.4, after VGG / OverFeat): the fc layer applied as a 1x1
  convolution at every position of the full image's last feature map, the score map averaged over
  positions, and the softmax scores averaged over the scales (shorter side in {224, 256, 384, 480,
  640}). For a network that ends in global average pooling and a linear layer, the position-average
  of the score map equals the classifier applied to the whole image; we compute it the explicit way
  for our ResNets and through the classifier for other networks.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["dense_logits", "center_scores", "ten_crop_scores", "multiscale_scores", "topk_correct",
           "accuracy_from_correct"]

Normalize = Callable[[Tensor], Tensor]


def _head(model: nn.Module):
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear) and hasattr(model, "forward_features") and getattr(model, "out_features", None):
        return fc
    return None


def dense_logits(model: nn.Module, images: Tensor) -> Tensor:
    """[N, 3, H, W] of any size -> [N, C]: the fc as a 1x1 convolution over the last feature map,
    averaged over positions (our ResNets), or the classifier on the whole image (other networks)."""
    fc = _head(model)
    if fc is None:
        return model(images)
    features = model.forward_features(images)[model.out_features[-1]]
    score_map = F.conv2d(features, fc.weight[:, :, None, None], fc.bias)  # [N, C, h, w]
    return score_map.mean(dim=(2, 3))


def center_scores(model: nn.Module, images: Tensor, normalize: Normalize) -> Tensor:
    """[N, 3, h, w] crops -> logits [N, C]."""
    return model(normalize(images))


def ten_crop_scores(model: nn.Module, crops: Tensor, normalize: Normalize) -> Tensor:
    """[N, 10, 3, h, w] -> the mean softmax over the ten crops, [N, C]."""
    n, k = crops.shape[:2]
    logits = model(normalize(crops.flatten(0, 1)))
    return logits.float().softmax(dim=1).view(n, k, -1).mean(dim=1)


def multiscale_scores(model: nn.Module, images: Sequence[Sequence[Tensor]], normalize: Normalize) -> Tensor:
    """For each image, a list of [3, h_s, w_s] (one per scale) -> the mean softmax over scales, [N, C].

    Images are run one at a time: every one has its own aspect ratio, hence its own map size.
    """
    out = []
    for scales in images:
        probs = [dense_logits(model, normalize(x[None])).float().softmax(dim=1) for x in scales]
        out.append(torch.cat(probs).mean(dim=0))
    return torch.stack(out)


def topk_correct(scores: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, Tensor]:
    """``{k: bool [N]}``: whether the label is among the ``k`` best scores (k capped at the number of
    classes, so top-5 of a 3-class problem is top-3)."""
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices  # [N, kmax], best first
    hits = top == labels[:, None]
    return {k: hits[:, :min(k, kmax)].any(dim=1) for k in ks}


def accuracy_from_correct(correct: List[Sequence[bool]], ks: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """Rows of per-image hits ``(hit@k for k in ks)`` -> ``{"top1": %, "top5": %}``."""
    n = len(correct)
    return {f"top{k}": 100.0 * sum(bool(row[i]) for row in correct) / n if n else float("nan")
            for i, k in enumerate(ks)}
