"""Box helpers for YOLO26, as ``ultralytics.utils.tal`` and ``.metrics`` has them.

Anchors are cell centres in grid units, level by level and row-major within a
level (ultralytics' order); a box is ``(..., 4)`` on the last axis, ``xyxy``
(corners) or ``xywh`` (centre, width, height).

  anchors_Ax2, stride_Ax1 = make_anchors([(20, 20), (10, 10), (5, 5)],
                                         (8, 16, 32))
  boxes_BxAx4 = dist2bbox(ltrb_BxAx4, anchors_Ax2, xywh=False) * stride_Ax1
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def make_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[float],
    grid_cell_offset: float = 0.5,
    dtype: jnp.dtype = jnp.float32,
) -> tuple[jax.Array, jax.Array]:
  """Anchor points and their strides for feature maps of the given sizes.

  The same as ``ultralytics.utils.tal.make_anchors``: anchors ``(x + 0.5,
  y + 0.5)`` of every cell, level by level, row-major within a level.

  Args:
    feature_sizes: ``(height, width)`` of each level's feature map (static).
    strides: the stride of each level in pixels, e.g. ``(8, 16, 32)``.
    grid_cell_offset: offset added to the cell indices (0.5: cell centres).
    dtype: dtype of the results.

  Returns:
    ``(anchor_points_Ax2, stride_Ax1)``: anchors ``(x, y)`` in grid units and
    each anchor's stride, with ``A = sum(h * w)``.

  Example:
    >>> a, s = make_anchors([(2, 2), (1, 1)], (8, 16))
    >>> a.tolist()
    [[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5], [0.5, 0.5]]
    >>> s[:, 0].tolist()
    [8.0, 8.0, 8.0, 8.0, 16.0]
  """
  if len(feature_sizes) != len(strides):
    raise ValueError(f'make_anchors: {len(feature_sizes)} feature_sizes but '
                     f'{len(strides)} strides; give one stride per level.')
  points, stride_column = [], []
  for (h, w), stride in zip(feature_sizes, strides):
    sy, sx = np.meshgrid(np.arange(h) + grid_cell_offset,
                         np.arange(w) + grid_cell_offset, indexing='ij')
    points.append(np.stack((sx, sy), -1).reshape(-1, 2))
    stride_column.append(np.full((h * w, 1), stride))
  return (jnp.asarray(np.concatenate(points), dtype),
          jnp.asarray(np.concatenate(stride_column), dtype))


def dist2bbox(distance: jax.Array, anchor_points: jax.Array,
              xywh: bool = True) -> jax.Array:
  """Boxes from ``ltrb`` distances to the anchor points (last axis).

  Args:
    distance: ``(..., 4)`` left, top, right, bottom distances.
    anchor_points: ``(..., 2)`` anchors, broadcastable against ``distance``.
    xywh: return ``(cx, cy, w, h)`` if True, else ``(x1, y1, x2, y2)``.

  Returns:
    ``(..., 4)`` boxes in the units of the inputs.
  """
  lt, rb = distance[..., :2], distance[..., 2:]
  x1y1 = anchor_points - lt
  x2y2 = anchor_points + rb
  if xywh:
    return jnp.concatenate(((x1y1 + x2y2) / 2, x2y2 - x1y1), -1)
  return jnp.concatenate((x1y1, x2y2), -1)


def bbox2dist(anchor_points: jax.Array, bbox: jax.Array) -> jax.Array:
  """``ltrb`` distances from anchor points to ``xyxy`` boxes (unclamped).

  Args:
    anchor_points: ``(..., 2)`` anchors.
    bbox: ``(..., 4)`` boxes ``(x1, y1, x2, y2)``.

  Returns:
    ``(..., 4)`` distances ``(a - x1y1, x2y2 - a)``.
  """
  return jnp.concatenate((anchor_points - bbox[..., :2],
                          bbox[..., 2:] - anchor_points), -1)


def xywh2xyxy(boxes: jax.Array) -> jax.Array:
  """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)`` on the last axis."""
  xy, half_wh = boxes[..., :2], boxes[..., 2:] / 2
  return jnp.concatenate((xy - half_wh, xy + half_wh), -1)


def xyxy2xywh(boxes: jax.Array) -> jax.Array:
  """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)`` on the last axis."""
  x1y1, x2y2 = boxes[..., :2], boxes[..., 2:]
  return jnp.concatenate(((x1y1 + x2y2) / 2, x2y2 - x1y1), -1)


def _clamp_min0(x: jax.Array) -> jax.Array:
  # torch's clamp(min=0) passes the gradient at x == 0 (jnp.maximum would
  # halve it); touching boxes hit that tie exactly.
  return jnp.where(x >= 0, x, jnp.zeros_like(x))


def bbox_iou(box1: jax.Array, box2: jax.Array, *, xywh: bool = True,
             ciou: bool = False, eps: float = 1e-7) -> jax.Array:
  r"""IoU or Complete IoU of box pairs, as ``ultralytics.utils.metrics.bbox_iou``.

  Elementwise over the broadcast leading axes. CIoU subtracts the normalized
  centre distance and ``alpha * v`` (aspect-ratio term), with ``alpha`` under
  ``stop_gradient`` as in ultralytics; the same ``eps`` placements too (added
  to the heights only in ``xyxy`` mode, to the union and the enclosing
  diagonal always).

  .. math::
    \mathrm{CIoU} = \mathrm{IoU} - \frac{\rho^2}{c^2} - \alpha v, \quad
    v = \tfrac{4}{\pi^2}\left(\arctan\tfrac{w_2}{h_2}
      - \arctan\tfrac{w_1}{h_1}\right)^2, \quad
    \alpha = \frac{v}{1 - \mathrm{IoU} + v + \epsilon}

  Args:
    box1: ``(..., 4)`` boxes.
    box2: ``(..., 4)`` boxes, broadcastable against ``box1``.
    xywh: boxes are ``(cx, cy, w, h)`` if True, else ``(x1, y1, x2, y2)``.
    ciou: return CIoU instead of IoU.
    eps: the small constant (ultralytics: 1e-7).

  Returns:
    ``(..., 1)`` IoU or CIoU (ultralytics keeps the last axis).

  References:
    Zheng et al., `Distance-IoU Loss: Faster and Better Learning for Bounding
    Box Regression <https://arxiv.org/abs/1911.08287>`_, 2020.
  """
  if xywh:
    w1, h1 = box1[..., 2:3], box1[..., 3:4]
    w2, h2 = box2[..., 2:3], box2[..., 3:4]
    box1, box2 = xywh2xyxy(box1), xywh2xyxy(box2)
  b1_x1, b1_y1, b1_x2, b1_y2 = jnp.split(box1, 4, -1)
  b2_x1, b2_y1, b2_x2, b2_y2 = jnp.split(box2, 4, -1)
  if not xywh:
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps

  inter = (_clamp_min0(jnp.minimum(b1_x2, b2_x2) - jnp.maximum(b1_x1, b2_x1))
           * _clamp_min0(jnp.minimum(b1_y2, b2_y2)
                         - jnp.maximum(b1_y1, b2_y1)))
  union = w1 * h1 + w2 * h2 - inter + eps
  iou = inter / union
  if not ciou:
    return iou
  cw = jnp.maximum(b1_x2, b2_x2) - jnp.minimum(b1_x1, b2_x1)
  ch = jnp.maximum(b1_y2, b2_y2) - jnp.minimum(b1_y1, b2_y1)
  c2 = cw**2 + ch**2 + eps
  rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2)**2
          + (b2_y1 + b2_y2 - b1_y1 - b1_y2)**2) / 4
  v = (4 / math.pi**2) * (jnp.arctan(w2 / h2) - jnp.arctan(w1 / h1))**2
  alpha = jax.lax.stop_gradient(v / (1 - iou + v + eps))
  return iou - (rho2 / c2 + v * alpha)
