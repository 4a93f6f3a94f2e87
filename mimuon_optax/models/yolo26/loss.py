"""The YOLO26 training loss: ultralytics' ``E2ELoss``, jit-compatible.

Two ``v8DetectionLoss`` branches on the two heads' raw outputs, each with a
task-aligned assigner (one-to-many: top-10 anchors per ground truth;
one-to-one: top-7, then the single best), mixed with a weight that moves from
the one-to-many to the one-to-one branch over training (``o2m_weight``).

  targets = targets_from_ultralytics(batch_idx, cls, bboxes, batch_size=B,
                                     max_boxes=M)  # host side, padded
  check_targets(targets, num_classes)               # host side, raises
  total, parts = e2e_loss(preds, targets, o2m_weight(epoch, epochs),
                          image_size=(H, W))        # jit: one shape, one trace

Ground truth is padded to a fixed ``M`` boxes per image with a mask
(``Targets``), so one compiled step serves every batch. Padding entries
(``mask == False``) are ignored: their boxes and classes are replaced by
zeros before use, so whatever they hold (even NaN) gives the same loss and
gradients as any other padding size.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mimuon_optax.models.yolo26 import boxes as box_ops

STRIDES = (8, 16, 32)
BOX_GAIN, CLS_GAIN, L1_GAIN = 7.5, 0.5, 1.5  # ultralytics' box, cls, dfl
ALPHA, BETA, ASSIGNER_EPS = 0.5, 6.0, 1e-9   # TaskAlignedAssigner
O2M_TOPK, O2O_TOPK, O2O_TOPK2 = 10, 7, 1     # E2ELoss' two branches
_BOX_TOL = 1e-5  # check_targets: corners may leave [0, 1] by this (rounding)


class Targets(NamedTuple):
  """Ground truth padded to ``M`` boxes per image.

  Attributes:
    boxes: ``(B, M, 4)`` float, normalized ``(cx, cy, w, h)`` in ``[0, 1]``.
    classes: ``(B, M)`` int32 class ids.
    mask: ``(B, M)`` bool; False marks padding.
  """
  boxes: Any     # shape=(B, M, 4), dtype=float32
  classes: Any   # shape=(B, M), dtype=int32
  mask: Any      # shape=(B, M), dtype=bool


class Assignment(NamedTuple):
  """What the task-aligned assigner gives each anchor (no gradient).

  Attributes:
    target_boxes: ``(B, A, 4)`` assigned ground-truth box, ``xyxy`` pixels.
    target_scores: ``(B, A, C)`` soft class targets.
    fg_mask: ``(B, A)`` bool, the anchor is positive.
    target_gt_idx: ``(B, A)`` int32 index of the assigned ground truth.
  """
  target_boxes: jax.Array
  target_scores: jax.Array
  fg_mask: jax.Array
  target_gt_idx: jax.Array


# --- Host side: ultralytics' batch layout <-> Targets, and validation --------


def targets_from_ultralytics(batch_idx: Any, cls: Any, bboxes: Any, *,
                             batch_size: int, max_boxes: int) -> Targets:
  """Pads ultralytics' flat ground truth into ``Targets`` (numpy, host side).

  Boxes keep their order within each image (ultralytics' order, which its
  assigner's tie-breaks follow).

  Args:
    batch_idx: ``(N,)`` image index of each box.
    cls: ``(N,)`` or ``(N, 1)`` class ids.
    bboxes: ``(N, 4)`` normalized ``(cx, cy, w, h)``.
    batch_size: number of images ``B``.
    max_boxes: the padded number of boxes per image ``M``.

  Returns:
    ``Targets`` of numpy arrays.

  Raises:
    ValueError: on mismatched lengths, a non-integer class id, an image index
      outside ``[0, batch_size)``, or an image with more than ``max_boxes``
      boxes.

  Example:
    >>> t = targets_from_ultralytics([0., 1., 1.], [[3.], [0.], [2.]],
    ...                              [[.5, .5, .2, .2]] * 3, batch_size=3,
    ...                              max_boxes=4)
    >>> t.classes.tolist(), t.mask.sum(1).tolist()
    ([[3, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]], [1, 2, 0])
  """
  batch_idx = np.asarray(batch_idx).reshape(-1)
  cls = np.asarray(cls).reshape(-1)
  bboxes = np.asarray(bboxes, np.float32).reshape(-1, 4)
  if not len(batch_idx) == len(cls) == len(bboxes):
    raise ValueError(f'targets_from_ultralytics: batch_idx, cls and bboxes '
                     f'have {len(batch_idx)}, {len(cls)} and {len(bboxes)} '
                     'rows; they must be equal.')
  if np.any(cls != np.round(cls)):
    bad = int(np.flatnonzero(cls != np.round(cls))[0])
    raise ValueError(f'targets_from_ultralytics: cls[{bad}] = {cls[bad]} is '
                     'not an integer class id.')
  image = batch_idx.astype(np.int64)
  if len(image) and (image.min() < 0 or image.max() >= batch_size
                     or np.any(image != batch_idx)):
    bad = int(np.flatnonzero((image < 0) | (image >= batch_size)
                             | (image != batch_idx))[0])
    raise ValueError(f'targets_from_ultralytics: batch_idx[{bad}] = '
                     f'{batch_idx[bad]} is not an image index in '
                     f'[0, {batch_size}).')
  counts = np.bincount(image, minlength=batch_size)
  if len(counts) and counts.max() > max_boxes:
    worst = int(counts.argmax())
    raise ValueError(f'targets_from_ultralytics: image {worst} has '
                     f'{counts[worst]} boxes, more than max_boxes='
                     f'{max_boxes}.')
  order = np.argsort(image, kind='stable')
  slot = np.arange(len(image)) - np.concatenate(
      ([0], np.cumsum(counts)))[image[order]]
  out = Targets(np.zeros((batch_size, max_boxes, 4), np.float32),
                np.zeros((batch_size, max_boxes), np.int32),
                np.zeros((batch_size, max_boxes), bool))
  out.boxes[image[order], slot] = bboxes[order]
  out.classes[image[order], slot] = cls[order]
  out.mask[image[order], slot] = True
  return out


def targets_to_ultralytics(targets: Targets) -> dict[str, np.ndarray]:
  """``Targets`` back to ultralytics' flat ``batch_idx``, ``cls``, ``bboxes``.

  Args:
    targets: padded ground truth.

  Returns:
    ``{"batch_idx": (N,), "cls": (N, 1), "bboxes": (N, 4)}`` float32 numpy
    arrays, image by image in slot order (what ultralytics' collate gives).
  """
  mask = np.asarray(targets.mask, bool)
  image, _ = np.nonzero(mask)
  return {'batch_idx': image.astype(np.float32),
          'cls': np.asarray(targets.classes)[mask].astype(np.float32)[:, None],
          'bboxes': np.asarray(targets.boxes, np.float32)[mask]}


def check_targets(targets: Targets, num_classes: int) -> None:
  """Raises a ``ValueError`` naming the first bad box (host side).

  The jitted loss cannot raise on values; call this where the batch is made.
  Checked for each real (unmasked) box: the shapes agree; the class id is an
  integer in ``[0, num_classes)``; ``cx, cy, w, h`` are finite; ``w, h > 0``;
  the corners lie in ``[0, 1]`` (to within 1e-5 for rounding).

  Args:
    targets: padded ground truth.
    num_classes: the model's number of classes.

  Raises:
    ValueError: naming the image index, box index and field.
  """
  boxes = np.asarray(targets.boxes)
  classes = np.asarray(targets.classes)
  mask = np.asarray(targets.mask)
  if boxes.ndim != 3 or boxes.shape[-1] != 4:
    raise ValueError(f'targets.boxes has shape {boxes.shape}; expected '
                     '(B, M, 4).')
  if classes.shape != boxes.shape[:2] or mask.shape != boxes.shape[:2]:
    raise ValueError(f'targets.classes {classes.shape} and targets.mask '
                     f'{mask.shape} must both have shape {boxes.shape[:2]} '
                     '(targets.boxes is (B, M, 4)).')
  if mask.dtype != bool:
    raise ValueError(f'targets.mask has dtype {mask.dtype}; expected bool.')
  cx, cy, w, h = np.moveaxis(boxes.astype(np.float64), -1, 0)
  problems = (
      ('classes', (classes < 0) | (classes >= num_classes)
       | (classes != np.round(classes)),
       f'is not a class id in [0, {num_classes})'),
      ('boxes', ~np.isfinite(boxes).all(-1), 'is not finite (NaN or inf)'),
      ('boxes', (w <= 0) | (h <= 0), 'has width or height <= 0'),
      ('boxes', (cx - w / 2 < -_BOX_TOL) | (cy - h / 2 < -_BOX_TOL)
       | (cx + w / 2 > 1 + _BOX_TOL) | (cy + h / 2 > 1 + _BOX_TOL),
       'reaches outside the image [0, 1]'),
  )
  for field, bad, what in problems:
    bad = bad & mask
    if bad.any():
      i, j = (int(x) for x in np.argwhere(bad)[0])
      value = classes[i, j] if field == 'classes' else boxes[i, j].tolist()
      raise ValueError(f'targets.{field}[{i}, {j}] (image {i}, box {j}) = '
                       f'{value} {what}.')


# --- The o2m -> o2o schedule --------------------------------------------------


def o2m_weight(epoch: Any, epochs: int) -> jax.Array:
  r"""The one-to-many branch's weight after ``epoch`` completed epochs.

  ultralytics' ``E2ELoss.decay``: 0.8 at the start, linearly to 0.1 at the
  last epoch; the one-to-one branch gets ``1 - o2m_weight``. Pass the result
  to ``e2e_loss`` as an array so a new value does not recompile.

  .. math::
    w(e) = \max\left(1 - \tfrac{e}{\max(E - 1, 1)}, 0\right)
      (0.8 - 0.1) + 0.1

  Args:
    epoch: completed epochs (a number or a traced scalar).
    epochs: total epochs ``E`` (static).

  Returns:
    A float32 scalar.

  Example:
    >>> [round(float(o2m_weight(e, 100)), 4) for e in (0, 1, 50, 99)]
    [0.8, 0.7929, 0.4465, 0.1]
  """
  progress = jnp.asarray(epoch, jnp.float32) / max(epochs - 1, 1)
  return jnp.maximum(1 - progress, 0) * (0.8 - 0.1) + 0.1


# --- The assigner -------------------------------------------------------------


def _topk_mask(metric_BxMxA: jax.Array, k: int) -> jax.Array:
  """True at each row's ``k`` largest entries.

  ``lax.top_k`` breaks ties by the lower index; ``torch.topk`` on CPU by its
  heap/selection order. Ties only occur between equal alignments, in practice
  zero ones (a candidate whose CIoU is <= 0), which get a target score of 0.
  """
  _, idx_BxMxK = jax.lax.top_k(metric_BxMxA, k)
  b, m = metric_BxMxA.shape[:2]
  return jnp.zeros(metric_BxMxA.shape, bool).at[
      jnp.arange(b)[:, None, None], jnp.arange(m)[None, :, None],
      idx_BxMxK].set(True)


def _candidates(anchors_Ax2: jax.Array, gt_BxMx4: jax.Array,
                mask_BxM: jax.Array, min_side: float) -> jax.Array:
  """Anchors strictly inside each ground truth, sides enlarged to ``min_side``.

  The small-box enlargement of ultralytics' ``select_candidates_in_gts``,
  written with the same float operations (xyxy -> xywh -> xyxy) so border
  anchors fall on the same side.
  """
  xywh = box_ops.xyxy2xywh(gt_BxMx4)
  small = (xywh[..., 2:] < min_side) & mask_BxM[..., None]
  xywh = jnp.concatenate(
      (xywh[..., :2], jnp.where(small, jnp.float32(min_side), xywh[..., 2:])),
      -1)
  gt = box_ops.xywh2xyxy(xywh)[:, :, None, :]
  ax, ay = anchors_Ax2[:, 0], anchors_Ax2[:, 1]
  eps = ASSIGNER_EPS
  return ((ax - gt[..., 0] > eps) & (ay - gt[..., 1] > eps)
          & (gt[..., 2] - ax > eps) & (gt[..., 3] - ay > eps))


def task_aligned_assign(scores_BxAxC: jax.Array, pred_BxAx4: jax.Array,
                        anchors_Ax2: jax.Array, gt_cls_BxM: jax.Array,
                        gt_BxMx4: jax.Array, mask_BxM: jax.Array, *,
                        topk: int, topk2: int | None = None,
                        min_side: float = STRIDES[1]) -> Assignment:
  """ultralytics' ``TaskAlignedAssigner`` (alpha 0.5, beta 6), padded.

  For each ground truth: candidates are the anchors inside it (after the
  small-box enlargement to ``min_side`` pixels); alignment
  ``score[cls]**0.5 * max(CIoU, 0)**6``; positives its top-``topk`` anchors
  by alignment that are candidates. An anchor positive for several ground
  truths keeps the one with the largest overlap (over all ground truths it is
  a candidate of, as ultralytics does). With ``topk2``, each ground truth
  then keeps only its ``topk2`` best positives. Soft targets: the one-hot
  class times ``align * max_overlap / max_align`` of the assigned ground
  truth. Everything is wrapped in ``stop_gradient``.

  Ties in the top-k go to the lower anchor index (``lax.top_k``); torch's CPU
  ``topk`` orders equal values by its heap or selection algorithm, so the two
  can pick different anchors among equal alignments. Equal alignments are in
  practice zero ones (candidates with CIoU <= 0 when a ground truth has fewer
  than ``topk`` overlapping predictions); such a positive gets a target score
  and a box-loss weight of 0, so it changes the loss only where it makes an
  anchor positive for two ground truths and the overlap rule then moves it.

  Args:
    scores_BxAxC: class probabilities (sigmoid of the logits).
    pred_BxAx4: predicted ``xyxy`` boxes in pixels.
    anchors_Ax2: anchor points in pixels.
    gt_cls_BxM: ground-truth class ids.
    gt_BxMx4: ground-truth ``xyxy`` boxes in pixels.
    mask_BxM: False for padding.
    topk: positives per ground truth.
    topk2: optional second cut (the one-to-one branch: 1).
    min_side: smaller box sides are enlarged to this (ultralytics: stride 16).

  Returns:
    An ``Assignment``.
  """
  scores_BxAxC, pred_BxAx4 = jax.lax.stop_gradient((scores_BxAxC, pred_BxAx4))
  num_boxes, num_classes = gt_BxMx4.shape[1], scores_BxAxC.shape[-1]
  in_gt_BxMxA = _candidates(anchors_Ax2, gt_BxMx4, mask_BxM, min_side)
  cand_BxMxA = in_gt_BxMxA & mask_BxM[..., None]

  ciou_BxMxA = box_ops.bbox_iou(gt_BxMx4[:, :, None, :],
                                pred_BxAx4[:, None, :, :], xywh=False,
                                ciou=True)[..., 0]
  overlaps = jnp.where(cand_BxMxA, jnp.maximum(ciou_BxMxA, 0), 0)
  cls_scores_BxMxA = jnp.take_along_axis(
      scores_BxAxC.transpose(0, 2, 1), gt_cls_BxM[..., None], axis=1)
  align = jnp.where(cand_BxMxA, cls_scores_BxMxA**ALPHA * overlaps**BETA, 0)

  mask_pos = _topk_mask(align, topk) & cand_BxMxA
  multi_BxA = mask_pos.sum(1) > 1
  best_gt_BxA = jnp.argmax(overlaps, axis=1)
  is_best = jax.nn.one_hot(best_gt_BxA, num_boxes, axis=1, dtype=bool)
  mask_pos = jnp.where(multi_BxA[:, None, :], is_best, mask_pos)
  if topk2 is not None and topk2 != topk:
    mask_pos &= _topk_mask(align * mask_pos, topk2)

  fg_BxA = mask_pos.any(1)
  gt_idx_BxA = jnp.argmax(mask_pos, axis=1).astype(jnp.int32)
  labels_BxA = jnp.take_along_axis(gt_cls_BxM, gt_idx_BxA, axis=1)
  target_boxes = jnp.take_along_axis(gt_BxMx4, gt_idx_BxA[..., None], axis=1)

  align = align * mask_pos
  pos_align_BxMx1 = align.max(-1, keepdims=True)
  pos_overlaps_BxMx1 = (overlaps * mask_pos).max(-1, keepdims=True)
  norm_BxA = (align * pos_overlaps_BxMx1
              / (pos_align_BxMx1 + ASSIGNER_EPS)).max(1)
  target_scores = (jax.nn.one_hot(labels_BxA, num_classes)
                   * (fg_BxA * norm_BxA)[..., None])
  return jax.lax.stop_gradient(
      Assignment(target_boxes, target_scores, fg_BxA, gt_idx_BxA))


# --- The loss -----------------------------------------------------------------


def _feature_sizes(image_size: Sequence[int], num_anchors: int,
                   strides: Sequence[int]) -> list[tuple[int, int]]:
  height, width = image_size
  if height % max(strides) or width % max(strides):
    raise ValueError(f'image_size {tuple(image_size)} must be a multiple of '
                     f'the largest stride {max(strides)}.')
  sizes = [(height // s, width // s) for s in strides]
  if sum(h * w for h, w in sizes) != num_anchors:
    raise ValueError(f'predictions have {num_anchors} anchors but image_size '
                     f'{tuple(image_size)} with strides {tuple(strides)} '
                     f'gives {sum(h * w for h, w in sizes)}.')
  return sizes


def _bce_with_logits(logits: jax.Array, labels: jax.Array) -> jax.Array:
  # softplus(x) - x*y: torch's BCEWithLogits value, gradient sigmoid(x) - y
  # everywhere (also at x == 0, unlike the relu/abs form).
  return jax.nn.softplus(logits) - logits * labels


def detection_loss(preds: Mapping[str, jax.Array], targets: Targets, *,
                   image_size: Sequence[int], topk: int,
                   topk2: int | None = None,
                   strides: Sequence[int] = STRIDES) -> jax.Array:
  """One branch: ultralytics' ``v8DetectionLoss`` with ``reg_max = 1``.

  With ``T = max(sum(target_scores), 1)`` and ``w`` an anchor's summed target
  scores: box ``sum_fg (1 - CIoU) w / T``, class ``sum BCE(logits,
  target_scores) / T``, distance ``sum_fg mean_4 |d - d_target| w / T`` with
  the ltrb distances in pixels over the image size. Padding gives no
  candidates and no targets; an image without boxes adds only its class
  loss (all targets 0).

  Args:
    preds: ``{"boxes": (B, A, 4) ltrb distances in stride units, "scores":
      (B, A, C) class logits}``, anchors in ultralytics' order.
    targets: padded ground truth (``Targets``).
    image_size: ``(height, width)`` of the input images in pixels (static).
    topk: the assigner's positives per ground truth.
    topk2: optional second cut per ground truth.
    strides: the heads' strides.

  Returns:
    ``(3,)`` float32: ``[7.5 box, 0.5 cls, 1.5 l1] * B``, as ultralytics
    returns it (multiplied by the batch size).
  """
  dist_BxAx4 = preds['boxes'].astype(jnp.float32)
  logits_BxAxC = preds['scores'].astype(jnp.float32)
  batch = dist_BxAx4.shape[0]
  sizes = _feature_sizes(image_size, dist_BxAx4.shape[1], strides)
  anchors_Ax2, stride_Ax1 = box_ops.make_anchors(sizes, strides)
  height, width = image_size
  scale_4 = jnp.array([width, height, width, height], jnp.float32)

  mask_BxM = jnp.asarray(targets.mask, bool)
  gt_cls_BxM = jnp.where(mask_BxM, targets.classes, 0).astype(jnp.int32)
  gt_xywh = jnp.where(mask_BxM[..., None],
                      jnp.asarray(targets.boxes, jnp.float32), 0.0)
  gt_BxMx4 = box_ops.xywh2xyxy(gt_xywh * scale_4)

  pred_BxAx4 = box_ops.dist2bbox(dist_BxAx4, anchors_Ax2, xywh=False)
  assigned = task_aligned_assign(
      jax.nn.sigmoid(logits_BxAxC), pred_BxAx4 * stride_Ax1,
      anchors_Ax2 * stride_Ax1, gt_cls_BxM, gt_BxMx4, mask_BxM, topk=topk,
      topk2=topk2, min_side=strides[1] if len(strides) > 1 else strides[0])
  target_scores = assigned.target_scores
  total = jnp.maximum(target_scores.sum(), 1.0)

  loss_cls = _bce_with_logits(logits_BxAxC, target_scores).sum() / total

  fg = assigned.fg_mask[..., None]
  weight_BxAx1 = target_scores.sum(-1, keepdims=True)
  # Background anchors get a unit box on both sides, so that no 0/0 in their
  # (masked) CIoU reaches the gradient.
  unit = jnp.array([0.0, 0.0, 1.0, 1.0], jnp.float32)
  target_grid = jnp.where(fg, assigned.target_boxes / stride_Ax1, unit)
  pred_fg = jnp.where(fg, pred_BxAx4, unit)
  ciou = box_ops.bbox_iou(pred_fg, target_grid, xywh=False, ciou=True)
  loss_box = jnp.where(fg, (1.0 - ciou) * weight_BxAx1, 0).sum() / total

  target_dist = (box_ops.bbox2dist(anchors_Ax2, target_grid) * stride_Ax1
                 / scale_4)
  pred_dist = dist_BxAx4 * stride_Ax1 / scale_4
  l1 = jnp.abs(pred_dist - target_dist).mean(-1, keepdims=True)
  loss_l1 = jnp.where(fg, l1 * weight_BxAx1, 0).sum() / total

  return jnp.stack((loss_box * BOX_GAIN, loss_cls * CLS_GAIN,
                    loss_l1 * L1_GAIN)) * batch


def e2e_loss(preds: Mapping[str, Mapping[str, jax.Array]], targets: Targets,
             o2m: jax.Array | float, *, image_size: Sequence[int],
             strides: Sequence[int] = STRIDES
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """ultralytics' ``E2ELoss``: ``o2m * L_o2m + (1 - o2m) * L_o2o``.

  The one-to-many branch assigns the top 10 anchors per ground truth, the
  one-to-one branch the top 7 and then only the best one.

  Args:
    preds: ``{"one2many": {"boxes", "scores"}, "one2one": {...}}``, each as
      ``detection_loss`` takes it (the model's train-mode output).
    targets: padded ground truth (``Targets``).
    o2m: the one-to-many weight (``o2m_weight(epoch, epochs)``); an array
      argument, so changing it does not recompile.
    image_size: ``(height, width)`` of the input images (static).
    strides: the heads' strides.

  Returns:
    ``(total, parts)``: ``total`` is the scalar to differentiate (the sum of
    ultralytics' weighted 3-vector); ``parts`` maps ``"one2many"`` and
    ``"one2one"`` to each branch's ``(3,)`` vector ``[box, cls, l1]``
    (gains applied, multiplied by the batch size, before the weight), and
    ``"loss"`` to the weighted 3-vector.

  Example:
    >>> import functools
    >>> import jax
    >>> import jax.numpy as jnp
    >>> head = {'boxes': jnp.ones((1, 21, 4)),    # 32x32: 16 + 4 + 1 anchors
    ...         'scores': jnp.zeros((1, 21, 2))}
    >>> targets = Targets(jnp.array([[[.5, .5, .5, .5]]]), jnp.array([[1]]),
    ...                   jnp.array([[True]]))
    >>> loss_fn = jax.jit(functools.partial(e2e_loss, image_size=(32, 32)))
    >>> total, parts = loss_fn({'one2many': head, 'one2one': head}, targets,
    ...                        o2m_weight(0, 10))
    >>> parts['one2one'].shape, bool(total > 0)
    ((3,), True)
  """
  o2m = jnp.asarray(o2m, jnp.float32)
  o2m_loss = detection_loss(preds['one2many'], targets, image_size=image_size,
                            topk=O2M_TOPK, strides=strides)
  o2o_loss = detection_loss(preds['one2one'], targets, image_size=image_size,
                            topk=O2O_TOPK, topk2=O2O_TOPK2, strides=strides)
  loss = o2m * o2m_loss + jnp.maximum(1 - o2m, 0) * o2o_loss
  return loss.sum(), {'one2many': o2m_loss, 'one2one': o2o_loss, 'loss': loss}
