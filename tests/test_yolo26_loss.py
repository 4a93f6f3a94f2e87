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
  0.5-6 strides (objects of a few to ~100 px) and logits around -6 (the
  heads' bias init is -8.8 to -11.5 at 80 classes)."""
  a = _num_anchors(imgsz)

  def branch():
    return {'boxes': np.exp(rng.uniform(np.log(0.5), np.log(6.0),
                                        (batch, a, 4))).astype(np.float32),
            'scores': rng.normal(-6.0, 2.0, (batch, a, nc)).astype(np.float32)}
  return {'one2many': branch(), 'one2one': branch()}


def _aim(rng, preds, gt, imgsz):
  """Points about half the anchors near each ground truth at it (ltrb of the
  box, 20% noise; its class logit raised by 4), as a partly trained head
  would, so that the assigner's candidates (small boxes enlarged to 16 px
  included) have overlaps > 0."""
  idx, cls, bboxes = gt
  anchors, stride = (np.asarray(x) for x in boxes.make_anchors(
      [(imgsz // s, imgsz // s) for s in STRIDES], STRIDES))
  centres = anchors * stride
  for image, label, box in zip(idx.astype(int), cls, bboxes * imgsz):
    half = np.maximum(box[2:], 16.0) / 2
    near = np.all(np.abs(centres - box[:2]) <= half, -1)
    xyxy = np.concatenate((box[:2] - box[2:] / 2, box[:2] + box[2:] / 2))
    ltrb = np.concatenate((centres - xyxy[:2], xyxy[2:] - centres), -1)
    for p in preds.values():
      pick = near & (rng.random(len(near)) < 0.5)
      noisy = ltrb[pick] / stride[pick] * np.exp(
          rng.normal(0, 0.2, (pick.sum(), 4)))
      p['boxes'][image, pick] = np.maximum(noisy, 0.05)
      p['scores'][image, pick, label] += 4.0


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
    # At 160 px its edges run through anchor centres (x 40, 120 at stride
    # 16; y 20, 100 at stride 8): candidates must be strictly inside.
    on_anchors = np.array([[0.5, 0.375, 0.5, 0.5]])
    parts = [(np.zeros(4, np.float32), rng.integers(0, nc, 4), edge),
             (np.ones(3, np.float32), rng.integers(0, nc, 3),
              np.concatenate((edge[2:], on_anchors)))]
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


_TRACES = []  # one entry per trace of _loss_and_grad


@functools.partial(jax.jit, static_argnames='image_size')
def _loss_and_grad(preds, targets, o2m, image_size):
  _TRACES.append(image_size)

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
  _aim(rng, preds, (idx, cls, bboxes), imgsz)
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


def test_empty_batch_matches_ultralytics(criteria, rng):
  """No boxes at all: box = l1 = 0, cls > 0, as ultralytics gives."""
  nc, imgsz, batch = 10, 160, 2
  preds = _predictions(rng, batch, imgsz, nc)
  targets = loss_lib.targets_from_ultralytics(
      np.zeros(0), np.zeros(0), np.zeros((0, 4)), batch_size=batch,
      max_boxes=MAX_BOXES)
  assert not targets.mask.any()
  tpreds = _torch_preds(preds, imgsz, batch)
  want, _ = criteria[nc](tpreds, _torch_batch(*targets_to_flat(targets)))
  (total, parts), _ = _loss_and_grad(
      jax.tree.map(jnp.asarray, preds), jax.tree.map(jnp.asarray, targets),
      jnp.float32(0.8), (imgsz, imgsz))
  for name in ('one2many', 'one2one'):
    box, cls, l1 = np.asarray(parts[name])
    assert box == 0 and l1 == 0 and cls > 0, (name, parts[name])
  np.testing.assert_allclose(np.asarray(parts['loss']),
                             want.detach().numpy(), rtol=1e-4)
  np.testing.assert_allclose(float(total), float(want.detach().sum()),
                             rtol=1e-4)


def targets_to_flat(targets):
  flat = loss_lib.targets_to_ultralytics(targets)
  return flat['batch_idx'], flat['cls'], flat['bboxes']


def test_padding_size_and_contents_do_not_change_the_loss(rng):
  """M = 6 and M = 24 (padding full of NaN and bad class ids) under jit: the
  same loss and gradients."""
  nc, imgsz, batch = 10, 160, 2
  preds = _predictions(rng, batch, imgsz, nc)
  idx, cls, bboxes = _batch('random', rng, nc, imgsz)
  _aim(rng, preds, (idx, cls, bboxes), imgsz)
  preds = jax.tree.map(jnp.asarray, preds)
  results = []
  for max_boxes in (6, MAX_BOXES):
    targets = loss_lib.targets_from_ultralytics(
        idx, cls, bboxes, batch_size=batch, max_boxes=max_boxes)
    pad = ~targets.mask
    targets.boxes[pad] = np.nan
    targets.classes[pad] = 999
    loss_lib.check_targets(targets, nc)  # padding is not checked
    results.append(_loss_and_grad(preds, jax.tree.map(jnp.asarray, targets),
                                  jnp.float32(0.6), (imgsz, imgsz)))
  (total_a, parts_a), grads_a = results[0]
  (total_b, parts_b), grads_b = results[1]
  assert np.isfinite(float(total_a)) and parts_a['one2many'][0] > 0
  np.testing.assert_allclose(float(total_a), float(total_b), rtol=1e-6)
  for a, b in zip(jax.tree.leaves((parts_a, grads_a)),
                  jax.tree.leaves((parts_b, grads_b))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6,
                               atol=1e-9)


def test_o2m_weight_schedule_and_no_recompile(rng):
  """ultralytics' values for 100 epochs; a new weight reuses the compiled
  loss and moves the total between the two branches."""
  got = [float(loss_lib.o2m_weight(e, 100)) for e in (0, 1, 50, 99, 120)]
  np.testing.assert_allclose(got, [0.8, 0.792929, 0.446465, 0.1, 0.1],
                             atol=1e-6)
  assert float(loss_lib.o2m_weight(3, 1)) == pytest.approx(0.1)

  nc, imgsz, batch = 10, 160, 2
  preds = jax.tree.map(jnp.asarray, _predictions(rng, batch, imgsz, nc))
  targets = jax.tree.map(jnp.asarray, loss_lib.targets_from_ultralytics(
      *_batch('random', rng, nc, imgsz), batch_size=batch,
      max_boxes=MAX_BOXES))
  traced = []
  for epoch in (0, 50, 99):
    (total, parts), _ = _loss_and_grad(
        preds, targets, loss_lib.o2m_weight(epoch, 100), (imgsz, imgsz))
    traced.append(len(_TRACES))
    w = float(loss_lib.o2m_weight(epoch, 100))
    want = w * parts['one2many'] + (1 - w) * parts['one2one']
    np.testing.assert_allclose(float(total), float(want.sum()), rtol=1e-6)
  assert traced[0] == traced[-1], traced  # compiled once at most, not per w


def test_targets_round_trip_and_errors():
  idx = np.array([1, 0, 1, 1], np.float32)     # not sorted: kept per image
  cls = np.array([[2], [0], [1], [2]], np.float32)
  bboxes = np.array([[.5, .5, .2, .2], [.3, .3, .1, .2], [.6, .4, .2, .1],
                     [.9, .9, .2, .2]], np.float32)
  targets = loss_lib.targets_from_ultralytics(idx, cls, bboxes, batch_size=3,
                                              max_boxes=4)
  assert targets.mask.sum(1).tolist() == [1, 3, 0]
  np.testing.assert_array_equal(targets.classes[1, :3], [2, 1, 2])
  flat = loss_lib.targets_to_ultralytics(targets)
  order = np.argsort(idx, kind='stable')
  np.testing.assert_array_equal(flat['batch_idx'], idx[order])
  np.testing.assert_array_equal(flat['cls'], cls[order])
  np.testing.assert_array_equal(flat['bboxes'], bboxes[order])

  with pytest.raises(ValueError, match='image 1 has 3 boxes'):
    loss_lib.targets_from_ultralytics(idx, cls, bboxes, batch_size=3,
                                      max_boxes=2)
  with pytest.raises(ValueError, match=r'batch_idx\[0\] = 1.0'):
    loss_lib.targets_from_ultralytics(idx, cls, bboxes, batch_size=1,
                                      max_boxes=4)
  with pytest.raises(ValueError, match=r'cls\[2\] = 1.5 is not an integer'):
    loss_lib.targets_from_ultralytics(idx, cls + [[0], [0], [.5], [0]],
                                      bboxes, batch_size=3, max_boxes=4)
  with pytest.raises(ValueError, match='rows'):
    loss_lib.targets_from_ultralytics(idx[:3], cls, bboxes, batch_size=3,
                                      max_boxes=4)


@pytest.mark.parametrize('field,index,value,message', [
    ('classes', (1, 2), 3, r'classes\[1, 2\] \(image 1, box 2\) = 3 is not a '
     r'class id in \[0, 3\)'),
    ('classes', (0, 0), -1, r'classes\[0, 0\] \(image 0, box 0\)'),
    ('boxes', (1, 0), [.95, .5, .2, .2], r'boxes\[1, 0\] \(image 1, box 0\).*'
     'outside the image'),
    ('boxes', (1, 1), [.5, .5, 0., .2], r'boxes\[1, 1\].*width or height'),
    ('boxes', (1, 2), [.5, np.nan, .2, .2], r'boxes\[1, 2\].*not finite'),
])
def test_check_targets_names_the_bad_box(field, index, value, message):
  targets = loss_lib.targets_from_ultralytics(
      [0, 1, 1, 1], [0, 1, 2, 0],
      [[.5, .5, .2, .2], [.5, .5, .2, .2], [.1, .1, .2, .2],
       [.9, .9, .2, .2]],
      batch_size=2, max_boxes=4)
  loss_lib.check_targets(targets, 3)   # valid, incl. boxes touching edges
  getattr(targets, field)[index] = value
  with pytest.raises(ValueError, match=message):
    loss_lib.check_targets(targets, 3)


def test_bad_shapes_raise():
  targets = loss_lib.targets_from_ultralytics([0], [0], [[.5, .5, .2, .2]],
                                              batch_size=1, max_boxes=2)
  with pytest.raises(ValueError, match='mask has dtype'):
    loss_lib.check_targets(targets._replace(
        mask=targets.mask.astype(np.int32)), 3)
  with pytest.raises(ValueError, match=r'targets.boxes has shape \(1, 2\)'):
    loss_lib.check_targets(targets._replace(boxes=targets.boxes[..., 0]), 3)
  preds = {'boxes': jnp.zeros((1, 84, 4)), 'scores': jnp.zeros((1, 84, 3))}
  with pytest.raises(ValueError, match='multiple of the largest stride 32'):
    loss_lib.detection_loss(preds, targets, image_size=(64, 48), topk=10)
  with pytest.raises(ValueError, match='84 anchors but image_size'):
    loss_lib.detection_loss(preds, targets, image_size=(96, 96), topk=10)


def test_candidates_on_anchor_edges_match_ultralytics(criteria):
  """Boxes whose edges run through anchor centres, and small boxes enlarged
  to 16 px: the same candidate anchors as ultralytics (strictly inside)."""
  imgsz = 160
  anchors, stride = boxes.make_anchors(
      [(imgsz // s, imgsz // s) for s in STRIDES], STRIDES)
  xywh = np.array([[[0.5, 0.375, 0.5, 0.5],       # x 40..120, y 20..100 px
                    [0.25, 0.75, 0.25, 0.25],     # x 20..60, y 100..140
                    [0.5, 0.5, 0.025, 0.0125],    # 4 x 2 px -> 16 x 16
                    [0.0, 0.0, 0.0, 0.0]]], np.float32)  # padding
  mask = np.array([[True, True, True, False]])
  gt = boxes.xywh2xyxy(jnp.asarray(xywh) * imgsz)
  got = loss_lib._candidates(anchors * stride, gt, jnp.asarray(mask), 16.0)
  want = criteria[10].one2many.assigner.select_candidates_in_gts(
      torch.tensor(np.asarray(anchors * stride)), torch.tensor(np.asarray(gt)),
      torch.tensor(mask[..., None]))
  np.testing.assert_array_equal(np.asarray(got)[mask], want.numpy()[mask])
  # strictly inside: the 40 x 40 px box's edge anchors (x 20, 60 and y 100,
  # 140 at stride 8) are out
  assert np.asarray(got)[0, 1].sum() == 4 * 4 + 3 * 3 + 1


def test_zero_alignment_ties_pick_other_anchors_but_not_another_loss(
    criteria, rng):
  """A 3 px box whose two candidates (anchors 2 and 22 at 160 px) predict
  boxes beside it: all its alignments are 0, so its top-10 is a tie among
  zeros. lax.top_k takes the lowest indices (anchor 2 becomes a positive
  with target 0); torch's CPU topk (nth_element over 525 anchors) takes
  others. The loss and gradients still agree."""
  nc, imgsz, batch = 10, 160, 2
  preds = _predictions(rng, batch, imgsz, nc)
  idx, cls, bboxes = _gt(rng, 3, nc, 1)
  tiny = np.array([[20.0, 6.0, 3.0, 3.0]], np.float32) / imgsz
  idx, cls, bboxes = (np.concatenate(x) for x in (
      ([0.0], idx), ([5], cls), (tiny, bboxes)))
  _aim(rng, preds, (idx[1:], cls[1:], bboxes[1:]), imgsz)
  for p in preds.values():
    p['boxes'][0, [2, 22]] = 0.05   # 0.8 px boxes at (20, 4), (20, 12)
  targets = loss_lib.targets_from_ultralytics(
      idx, cls, bboxes, batch_size=batch, max_boxes=MAX_BOXES)
  tpreds, tbatch = _torch_preds(preds, imgsz, batch), _torch_batch(
      idx, cls, bboxes)

  anchors, stride = boxes.make_anchors(
      [(imgsz // s, imgsz // s) for s in STRIDES], STRIDES)
  assign = jax.jit(functools.partial(loss_lib.task_aligned_assign, topk=10))
  ours = assign(
      jax.nn.sigmoid(preds['one2many']['scores']),
      boxes.dist2bbox(jnp.asarray(preds['one2many']['boxes']), anchors,
                      xywh=False) * stride,
      anchors * stride, jnp.asarray(targets.classes),
      boxes.xywh2xyxy(jnp.asarray(targets.boxes) * imgsz),
      jnp.asarray(targets.mask))
  (fg, gt_idx, *_), _, _ = criteria[nc].one2many.get_assigned_targets_and_loss(
      tpreds['one2many'], tbatch)
  ours_tiny = np.asarray(ours.fg_mask[0] & (ours.target_gt_idx[0] == 0))
  theirs_tiny = (fg[0] & (gt_idx[0] == 0)).numpy()
  assert ours_tiny[2] and not ours_tiny[22], np.flatnonzero(ours_tiny)
  assert not theirs_tiny[[2, 22]].any(), np.flatnonzero(theirs_tiny)
  assert float(ours.target_scores[0, 2].sum()) == 0.0

  want, _ = criteria[nc](tpreds, tbatch)
  want.sum().backward()
  (total, parts), grads = _loss_and_grad(
      jax.tree.map(jnp.asarray, preds), jax.tree.map(jnp.asarray, targets),
      jnp.float32(criteria[nc].o2m), (imgsz, imgsz))
  np.testing.assert_allclose(np.asarray(parts['loss']),
                             want.detach().numpy(), rtol=1e-4)
  for name in ('one2many', 'one2one'):
    for leaf in ('boxes', 'scores'):
      _assert_grad_close(np.asarray(grads[name][leaf]),
                         tpreds[name][leaf].grad.numpy().transpose(0, 2, 1))
