"""YOLO26 box helpers and loss against ultralytics 8.4.190 (torch, float32)."""

import numpy as np
import pytest
import torch
from ultralytics.utils import metrics as ul_metrics
from ultralytics.utils import tal as ul_tal

import jax
import jax.numpy as jnp

from mimuon_optax.models.yolo26 import boxes

# --- boxes.py ---------------------------------------------------------------


def _random_xyxy(rng, n, scale=50.0):
  xy = rng.uniform(0, scale, (n, 2))
  wh = rng.uniform(0.5, scale / 2, (n, 2))
  return np.concatenate((xy, xy + wh), -1).astype(np.float32)


def test_make_anchors_and_dist2bbox_match_ultralytics(rng):
  sizes, strides = [(4, 6), (2, 3), (1, 2)], (8.0, 16.0, 32.0)
  feats = [torch.zeros(1, 3, h, w) for h, w in sizes]
  want_a, want_s = ul_tal.make_anchors(feats, torch.tensor(strides), 0.5)
  got_a, got_s = boxes.make_anchors(sizes, strides)
  np.testing.assert_array_equal(np.asarray(got_a), want_a.numpy())
  np.testing.assert_array_equal(np.asarray(got_s), want_s.numpy())

  dist = rng.uniform(0, 5, (2, got_a.shape[0], 4)).astype(np.float32)
  for xywh in (True, False):
    want = ul_tal.dist2bbox(torch.from_numpy(dist), want_a, xywh=xywh)
    got = boxes.dist2bbox(jnp.asarray(dist), got_a, xywh=xywh)
    np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-6)
  xyxy = boxes.dist2bbox(jnp.asarray(dist), got_a, xywh=False)
  np.testing.assert_allclose(np.asarray(boxes.bbox2dist(got_a, xyxy)), dist,
                             atol=1e-5)
  np.testing.assert_allclose(
      np.asarray(boxes.xywh2xyxy(boxes.xyxy2xywh(xyxy))), np.asarray(xyxy),
      atol=1e-5)


def test_make_anchors_rejects_mismatched_strides():
  with pytest.raises(ValueError, match='strides'):
    boxes.make_anchors([(2, 2), (1, 1)], (8.0,))


@pytest.mark.parametrize('xywh', [False, True])
def test_bbox_iou_ciou_and_gradient_match_ultralytics(rng, xywh):
  b1, b2 = _random_xyxy(rng, 64), _random_xyxy(rng, 64)
  b2[:8] = b1[:8]                      # identical pairs
  b2[8:12, 0] = b1[8:12, 2]            # touching edges: intersection width 0
  if xywh:
    b1, b2 = (np.array(boxes.xyxy2xywh(jnp.asarray(b)))
              for b in (b1, b2))
  for ciou in (False, True):
    t1 = torch.from_numpy(b1).requires_grad_()
    t2 = torch.from_numpy(b2).requires_grad_()
    want = ul_metrics.bbox_iou(t1, t2, xywh=xywh, CIoU=ciou)
    want.sum().backward()

    def total(x1, x2, ciou=ciou):
      return boxes.bbox_iou(x1, x2, xywh=xywh, ciou=ciou).sum()

    got = boxes.bbox_iou(jnp.asarray(b1), jnp.asarray(b2), xywh=xywh,
                         ciou=ciou)
    g1, g2 = jax.grad(total, (0, 1))(jnp.asarray(b1), jnp.asarray(b2))
    np.testing.assert_allclose(np.asarray(got), want.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g1), t1.grad.numpy(), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(g2), t2.grad.numpy(), rtol=1e-4,
                               atol=1e-6)
