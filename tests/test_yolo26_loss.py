"""YOLO26 box helpers and loss against ultralytics 8.4.190 (torch, float32)."""

import functools

import numpy as np
import pytest
import torch
from ultralytics.utils import metrics as ul_metrics
from ultralytics.utils import tal as ul_tal

import jax
import jax.numpy as jnp

from mimuon_optax.models.yolo26 import boxes
from mimuon_optax.models.yolo26 import loss as loss_lib

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


# --- loss.py against ultralytics' E2ELoss -----------------------------------

STRIDES = (8, 16, 32)
MAX_BOXES = 24  # one padded size for every case: one compile per (imgsz, nc)


@pytest.fixture(scope='module')
def criteria():
  """ultralytics' E2ELoss of a yolo26n built from YAML, per class count."""
  from ultralytics.cfg import get_cfg
  from ultralytics.nn.tasks import DetectionModel

  def build(nc):
    model = DetectionModel('yolo26n.yaml', nc=nc, verbose=False)
    model.args = get_cfg()
    return model.init_criterion()
  return {nc: build(nc) for nc in (10, 80)}


def _num_anchors(imgsz):
  return sum((imgsz // s)**2 for s in STRIDES)


def _predictions(rng, batch, imgsz, nc):
  """Both branches' raw outputs in a realistic range: ltrb distances of
  0.5-6 strides (objects of a few to ~100 px) and logits around -3."""
  a = _num_anchors(imgsz)

  def branch():
    return {'boxes': np.exp(rng.uniform(np.log(0.5), np.log(6.0),
                                        (batch, a, 4))).astype(np.float32),
            'scores': rng.normal(-3.0, 2.0, (batch, a, nc)).astype(np.float32)}
  return {'one2many': branch(), 'one2one': branch()}


def _gt(rng, n, nc, image, lo=0.08, hi=0.5):
  """``n`` random boxes (normalized cxcywh) inside the image."""
  wh = rng.uniform(lo, hi, (n, 2))
  cxy = rng.uniform(wh / 2, 1 - wh / 2)
  return (np.full(n, image, np.float32), rng.integers(0, nc, n),
          np.concatenate((cxy, wh), -1))


def _batch(case, rng, nc, imgsz):
  """Flat ultralytics ground truth (batch_idx, cls, bboxes) for a case."""
  parts = []
  if case == 'random':
    parts = [_gt(rng, 3, nc, 0), _gt(rng, 5, nc, 1)]
  elif case == 'empty_image':      # image 1 has no boxes
    parts = [_gt(rng, 4, nc, 0)]
  elif case == 'tiny_box':         # 3 px, enlarged to 16 px for candidates
    side = 3.0 / imgsz
    parts = [(np.zeros(1, np.float32), np.array([nc - 1]),
              np.array([[0.41, 0.57, side, side]])), _gt(rng, 2, nc, 1)]
  elif case == 'crowded':          # 20 overlapping boxes in one image
    parts = [_gt(rng, 20, nc, 0, lo=0.1, hi=0.6), _gt(rng, 1, nc, 1)]
  elif case == 'border':           # boxes touching the image edges
    edge = np.array([[0.15, 0.5, 0.3, 0.6],    # x1 = 0
                     [0.8, 0.1, 0.4, 0.2],     # x2 = 1, y1 = 0
                     [0.5, 0.875, 1.0, 0.25],  # full width, y2 = 1
                     [0.0625, 0.0625, 0.125, 0.125]])  # corner
    parts = [(np.zeros(4, np.float32), rng.integers(0, nc, 4), edge),
             (np.ones(2, np.float32), rng.integers(0, nc, 2), edge[2:])]
  idx, cls, bboxes = (np.concatenate(x) for x in zip(*parts))
  return idx, cls, bboxes.astype(np.float32)


def _torch_preds(preds, imgsz, batch):
  """Our (B, A, .) arrays as ultralytics' (B, ., A) leaves, with dummy feats."""
  feats = [torch.zeros(batch, 1, imgsz // s, imgsz // s) for s in STRIDES]
  return {name: {'boxes': torch.tensor(p['boxes'].transpose(0, 2, 1),
                                       requires_grad=True),
                 'scores': torch.tensor(p['scores'].transpose(0, 2, 1),
                                        requires_grad=True),
                 'feats': feats}
          for name, p in preds.items()}


def _torch_batch(idx, cls, bboxes):
  return {'batch_idx': torch.tensor(idx).float(),
          'cls': torch.tensor(cls).float().view(-1, 1),
          'bboxes': torch.tensor(bboxes).float().view(-1, 4)}


@functools.partial(jax.jit, static_argnames='image_size')
def _loss_and_grad(preds, targets, o2m, image_size):
  def total(p):
    return loss_lib.e2e_loss(p, targets, o2m, image_size=image_size)
  return jax.value_and_grad(total, has_aux=True)(preds)


def _assert_grad_close(got, want):
  # Per element within 1e-4 relative, or 1e-5 of the largest entry (the
  # entries span many decades; the small ones are sums of cancelling terms).
  np.testing.assert_allclose(got, want, rtol=1e-4,
                             atol=1e-5 * np.abs(want).max())


# Two (nc, imgsz) pairs cover nc 80 and 10, imgsz 320 and 160 with two
# compiles; the cases share them.
CASES = [('random', 80, 320), ('random', 10, 160), ('empty_image', 10, 160),
         ('tiny_box', 80, 320), ('crowded', 80, 320), ('crowded', 10, 160),
         ('border', 10, 160)]


@pytest.mark.parametrize('seed,case,nc,imgsz',
                         [(i, *c) for i, c in enumerate(CASES)],
                         ids=[f'{c}-nc{n}-{s}' for c, n, s in CASES])
def test_e2e_loss_matches_ultralytics(criteria, monkeypatch, seed, case, nc,
                                      imgsz):
  rng = np.random.default_rng(seed)
  batch = 2
  preds = _predictions(rng, batch, imgsz, nc)
  idx, cls, bboxes = _batch(case, rng, nc, imgsz)
  targets = loss_lib.targets_from_ultralytics(
      idx, cls, bboxes, batch_size=batch, max_boxes=MAX_BOXES)
  loss_lib.check_targets(targets, nc)

  crit = criteria[nc]
  most_gts_per_anchor = []
  select = crit.one2many.assigner.select_highest_overlaps

  def spy(mask_pos, *args):
    most_gts_per_anchor.append(int(mask_pos.sum(-2).max()))
    return select(mask_pos, *args)
  monkeypatch.setattr(crit.one2many.assigner, 'select_highest_overlaps', spy)

  tpreds, tbatch = _torch_preds(preds, imgsz, batch), _torch_batch(
      idx, cls, bboxes)
  want = {name: getattr(crit, name).loss(tpreds[name], tbatch)[0].detach()
          .numpy() for name in ('one2many', 'one2one')}
  o2m = crit.o2m
  want_loss, _ = crit(tpreds, tbatch)
  want_loss.sum().backward()

  (total, parts), grads = _loss_and_grad(
      jax.tree.map(jnp.asarray, preds), jax.tree.map(jnp.asarray, targets),
      jnp.float32(o2m), (imgsz, imgsz))
  for name in ('one2many', 'one2one'):
    # Both branches find positives (box loss > 0): the assigner ran.
    assert want[name][0] > 0 and want[name][2] > 0, (name, want[name])
    np.testing.assert_allclose(np.asarray(parts[name]), want[name],
                               rtol=1e-4, err_msg=name)
  np.testing.assert_allclose(float(total), float(want_loss.detach().sum()),
                             rtol=1e-4)
  np.testing.assert_allclose(np.asarray(parts['loss']),
                             want_loss.detach().numpy(), rtol=1e-4)
  for name, leaf in (('one2many', 'boxes'), ('one2many', 'scores'),
                     ('one2one', 'boxes'), ('one2one', 'scores')):
    _assert_grad_close(np.asarray(grads[name][leaf]),
                       tpreds[name][leaf].grad.numpy().transpose(0, 2, 1))
  if case == 'crowded':   # an anchor was in several gts' top-k: reassigned
    assert max(most_gts_per_anchor) > 1, most_gts_per_anchor
