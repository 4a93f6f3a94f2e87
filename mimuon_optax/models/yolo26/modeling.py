"""YOLO26 object detector in Flax NNX.

A port of ultralytics 8.4.190's ``yolo26.yaml`` detection model
(``ultralytics.nn.tasks.DetectionModel``): a CSP backbone of ``Conv`` and
``C3k2`` blocks, ``SPPF`` and ``C2PSA`` (position-sensitive attention), an FPN
/ PAN neck, and the end-to-end ``Detect`` head with a one-to-many branch
(trained with top-10 assignment, decoded with NMS) and a one-to-one branch
(top-1 assignment, NMS-free top-k). ``reg_max = 1``: boxes are four ``ltrb``
distances per anchor, no DFL.

Blocks keep ultralytics' class and attribute names, and ``YOLO26.model`` is
the same 24-row list as the YAML (rows 11, 12, 14, 15, 18 and 21 are the
parameter-free upsample and concat), so ultralytics' ``model.22.m.0.1.attn``
is ``model.model[22].m[0][1].attn`` here, and ``params.py`` maps every
``state_dict`` name to an NNX path by renaming its leaf only.

Activations are NHWC (ultralytics is NCHW); array names carry their shapes:

  B batch        H, W height and width      C channels
  A anchors      (sum of H*W over the three levels, ultralytics' order:
                  level by level, row-major within a level)
  K classes      N positions of one attention map (H*W)
  nh heads       kd key dim per head          hd value dim per head

Weights follow Flax: conv kernels are HWIO ``(kh, kw, in/groups, out)``
(ultralytics: OIHW), BatchNorm has ``scale``/``bias`` (params) and
``mean``/``var`` (batch stats, ultralytics' ``running_mean``/``running_var``).

Modes are NNX's: ``model.train()`` normalizes with batch statistics, updates
the running ones and returns raw head outputs; ``model.eval()`` uses the
running statistics and returns decoded boxes and probabilities. A new model
starts in train mode, as a torch module does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mimuon_optax.models.yolo26 import boxes as box_ops

# ultralytics' `initialize_weights` sets every BatchNorm2d to eps=1e-3,
# momentum=0.03; Flax's momentum is the weight of the old value.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.97
STRIDES = (8, 16, 32)  # P3, P4, P5
IN_CHANNELS = 3
REG_MAX = 1

# yolo26.yaml `scales`: (depth_multiple, width_multiple, max_channels).
_SCALES = {
    "n": (0.50, 0.25, 1024),
    "s": (0.50, 0.50, 1024),
    "m": (0.50, 1.00, 512),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.50, 512),
}
# parse_model sets C3k2's c3k=True at these scales.
_C3K_SCALES = ("m", "l", "x")

# torch's default Conv2d init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)),
# which ultralytics keeps.
_torch_conv_init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------


def make_divisible(x: float, divisor: int) -> int:
  """The smallest multiple of `divisor` that is >= `x` (ultralytics' rule)."""
  return math.ceil(x / divisor) * divisor


@dataclasses.dataclass(frozen=True)
class YOLO26Config:
  """The scale constants of ``yolo26.yaml`` plus the number of classes.

  Layer widths and repeats come from the YAML's base numbers by
  ultralytics' rules (`channels`, `repeats`); `c3k` is the C3k2 flag that
  ``parse_model`` forces to True at scales m, l and x.

  Example:
    >>> config = YOLO26Config.from_scale("m", num_classes=10)
    >>> config.channels(64), config.channels(1024), config.repeats(2), config.c3k
    (64, 512, 1, True)
  """

  num_classes: int = 80
  depth_multiple: float = 0.50
  width_multiple: float = 0.25
  max_channels: int = 1024
  c3k: bool = False
  scale: str | None = "n"  # the preset this came from (for messages only)

  def __post_init__(self):
    if self.num_classes < 1:
      raise ValueError(f"num_classes must be >= 1, got {self.num_classes}.")
    if self.depth_multiple <= 0 or self.width_multiple <= 0:
      raise ValueError("depth_multiple and width_multiple must be > 0, got"
                       f" {self.depth_multiple}, {self.width_multiple}.")

  @classmethod
  def from_scale(cls, scale: str, num_classes: int = 80) -> YOLO26Config:
    """The ``yolo26{scale}.yaml`` model: scale in "n", "s", "m", "l", "x"."""
    if scale not in _SCALES:
      raise ValueError(f"scale must be one of {tuple(_SCALES)}, got {scale!r}.")
    depth, width, max_channels = _SCALES[scale]
    return cls(num_classes=num_classes, depth_multiple=depth,
               width_multiple=width, max_channels=max_channels,
               c3k=scale in _C3K_SCALES, scale=scale)

  def channels(self, base: int) -> int:
    """A YAML row's output channels at this scale."""
    return make_divisible(min(base, self.max_channels) * self.width_multiple, 8)

  def repeats(self, base: int) -> int:
    """A YAML row's repeat count at this scale (Python's round, as ultralytics)."""
    return max(round(base * self.depth_multiple), 1) if base > 1 else base


# ----------------------------------------------------------------------------
# Blocks (ultralytics/nn/modules/conv.py, block.py)
# ----------------------------------------------------------------------------


class Sequential(nnx.List):
  """An `nnx.List` applied in order (torch's ``nn.Sequential``).

  Paths carry the index, as torch's state_dict names do (``cv2.0.2``).
  """

  def __call__(self, x):
    for layer in self:
      x = layer(x)
    return x


class Conv(nnx.Module):
  """``act(BatchNorm(conv(x)))``: a bias-free conv, BatchNorm, SiLU.

  Padding is ``k // 2`` on every side (ultralytics' `autopad`), also at
  stride 2, where Flax's "SAME" would pad (0, 1) instead.
  """

  def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, *, g: int = 1,
               act: bool = True, rngs: nnx.Rngs):
    self.conv = nnx.Conv(c1, c2, (k, k), strides=(s, s),
                         padding=((k // 2, k // 2),) * 2,
                         feature_group_count=g, use_bias=False,
                         kernel_init=_torch_conv_init, rngs=rngs)
    # None once `params.fuse_batchnorm` has folded it into a biased conv.
    self.bn: nnx.BatchNorm | None = nnx.BatchNorm(
        c2, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, use_fast_variance=False,
        rngs=rngs)
    self.act = act

  def __call__(self, x_BxHxWxC):
    y = self.conv(x_BxHxWxC)
    if self.bn is not None:
      y = self.bn(y)
    return nnx.silu(y) if self.act else y


class DWConv(Conv):
  """Depth-wise `Conv`: ``gcd(c1, c2)`` groups."""

  def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, *,
               act: bool = True, rngs: nnx.Rngs):
    super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), act=act, rngs=rngs)


class Bottleneck(nnx.Module):
  """``x + cv2(cv1(x))`` (the residual only if `shortcut` and c1 == c2)."""

  def __init__(self, c1: int, c2: int, shortcut: bool = True,
               k: tuple[int, int] = (3, 3), e: float = 0.5, *,
               rngs: nnx.Rngs):
    c_ = int(c2 * e)
    self.cv1 = Conv(c1, c_, k[0], rngs=rngs)
    self.cv2 = Conv(c_, c2, k[1], rngs=rngs)
    self.add = shortcut and c1 == c2

  def __call__(self, x):
    y = self.cv2(self.cv1(x))
    return x + y if self.add else y


class C3k(nnx.Module):
  """CSP block: ``cv3(concat(m(cv1(x)), cv2(x)))``, m = n 3x3 Bottlenecks."""

  def __init__(self, c1: int, c2: int, n: int = 2, shortcut: bool = True,
               e: float = 0.5, k: int = 3, *, rngs: nnx.Rngs):
    c_ = int(c2 * e)
    self.cv1 = Conv(c1, c_, 1, rngs=rngs)
    self.cv2 = Conv(c1, c_, 1, rngs=rngs)
    self.cv3 = Conv(2 * c_, c2, 1, rngs=rngs)
    self.m = Sequential([Bottleneck(c_, c_, shortcut, (k, k), e=1.0, rngs=rngs)
                         for _ in range(n)])

  def __call__(self, x):
    return self.cv3(jnp.concatenate((self.m(self.cv1(x)), self.cv2(x)), -1))


class C3k2(nnx.Module):
  """C2f with C3k, Bottleneck or Bottleneck+PSABlock inner blocks.

  ``cv1`` makes 2c channels split into ``[a, b]``; each inner block ``m[i]``
  runs on the previous output; ``cv2`` merges ``[a, b, m_1, ..., m_n]``.
  """

  def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False,
               e: float = 0.5, attn: bool = False, shortcut: bool = True, *,
               rngs: nnx.Rngs):
    self.c = c = int(c2 * e)
    self.cv1 = Conv(c1, 2 * c, 1, rngs=rngs)
    self.cv2 = Conv((2 + n) * c, c2, 1, rngs=rngs)

    def inner():
      if attn:
        return Sequential([
            Bottleneck(c, c, shortcut, rngs=rngs),
            PSABlock(c, attn_ratio=0.5, num_heads=max(c // 64, 1), rngs=rngs)])
      if c3k:
        return C3k(c, c, 2, shortcut, rngs=rngs)
      return Bottleneck(c, c, shortcut, rngs=rngs)

    self.m = nnx.List([inner() for _ in range(n)])

  def __call__(self, x):
    y = self.cv1(x)
    ys = [y[..., :self.c], y[..., self.c:]]
    for block in self.m:
      ys.append(block(ys[-1]))
    return self.cv2(jnp.concatenate(ys, -1))


def _max_pool_same(x_BxHxWxC, k: int):
  """Stride-1 k x k max pool with k//2 padding of -inf (torch's MaxPool2d)."""
  p = k // 2
  return jax.lax.reduce_window(x_BxHxWxC, -jnp.inf, jax.lax.max, (1, k, k, 1),
                               (1, 1, 1, 1), ((0, 0), (p, p), (p, p), (0, 0)))


class SPPF(nnx.Module):
  """Spatial pyramid pooling, fast: ``cv2(concat(y0, mp(y0), mp^2(y0), ...))``.

  ``y0 = cv1(x)`` has no activation; the output adds ``x`` when `shortcut`
  and c1 == c2.
  """

  def __init__(self, c1: int, c2: int, k: int = 5, n: int = 3,
               shortcut: bool = False, *, rngs: nnx.Rngs):
    c_ = c1 // 2
    self.cv1 = Conv(c1, c_, 1, act=False, rngs=rngs)
    self.cv2 = Conv(c_ * (n + 1), c2, 1, rngs=rngs)
    self.k, self.n = k, n
    self.add = shortcut and c1 == c2

  def __call__(self, x):
    ys = [self.cv1(x)]
    for _ in range(self.n):
      ys.append(_max_pool_same(ys[-1], self.k))
    y = self.cv2(jnp.concatenate(ys, -1))
    return y + x if self.add else y


class Attention(nnx.Module):
  """Multi-head self-attention plus a depth-wise 3x3 conv of the values.

  Attention runs over all H*W positions; there is no normalization layer.
  ``qkv`` lays its channels out per head as ``[q (kd) | k (kd) | v (hd)]``,
  with ``hd = dim // num_heads`` and ``kd = hd * attn_ratio``.
  """

  def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5,
               *, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.head_dim = dim // num_heads
    self.key_dim = int(self.head_dim * attn_ratio)
    self.scale = self.key_dim**-0.5
    self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, 1, act=False,
                    rngs=rngs)
    self.proj = Conv(dim, dim, 1, act=False, rngs=rngs)
    self.pe = Conv(dim, dim, 3, g=dim, act=False, rngs=rngs)

  def __call__(self, x_BxHxWxC):
    B, H, W, C = x_BxHxWxC.shape
    nh, kd = self.num_heads, self.key_dim
    qkv_BxNxnhx3 = self.qkv(x_BxHxWxC).reshape(B, H * W, nh, -1)
    q_BxNxnhxkd = qkv_BxNxnhx3[..., :kd] * self.scale
    k_BxNxnhxkd = qkv_BxNxnhx3[..., kd:2 * kd]
    v_BxNxnhxhd = qkv_BxNxnhx3[..., 2 * kd:]
    logits_BxnhxNxN = jnp.einsum("bnhd,bmhd->bhnm", q_BxNxnhxkd, k_BxNxnhxkd)
    attn_BxnhxNxN = jax.nn.softmax(logits_BxnhxNxN, axis=-1)
    out_BxNxnhxhd = jnp.einsum("bhnm,bmhd->bnhd", attn_BxnhxNxN, v_BxNxnhxhd)
    # Channel h*hd + d in both terms, as torch's views of (B, nh, hd, N).
    out_BxHxWxC = (out_BxNxnhxhd.reshape(B, H, W, C)
                   + self.pe(v_BxNxnhxhd.reshape(B, H, W, C)))
    return self.proj(out_BxHxWxC)


class PSABlock(nnx.Module):
  """``x += attn(x); x += ffn(x)`` with a two-conv feed-forward."""

  def __init__(self, c: int, attn_ratio: float = 0.5, num_heads: int = 4,
               shortcut: bool = True, *, rngs: nnx.Rngs):
    self.attn = Attention(c, num_heads=num_heads, attn_ratio=attn_ratio,
                          rngs=rngs)
    self.ffn = Sequential([Conv(c, 2 * c, 1, rngs=rngs),
                           Conv(2 * c, c, 1, act=False, rngs=rngs)])
    self.add = shortcut

  def __call__(self, x):
    x = x + self.attn(x) if self.add else self.attn(x)
    return x + self.ffn(x) if self.add else self.ffn(x)


class C2PSA(nnx.Module):
  """``cv2(concat(a, m(b)))`` with ``[a, b] = cv1(x)`` and m PSABlocks."""

  def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5, *,
               rngs: nnx.Rngs):
    if c1 != c2:
      raise ValueError(f"C2PSA needs c1 == c2, got {c1} and {c2}.")
    self.c = c = int(c1 * e)
    self.cv1 = Conv(c1, 2 * c, 1, rngs=rngs)
    self.cv2 = Conv(2 * c, c1, 1, rngs=rngs)
    self.m = Sequential([PSABlock(c, attn_ratio=0.5, num_heads=max(c // 64, 1),
                                  rngs=rngs) for _ in range(n)])

  def __call__(self, x):
    y = self.cv1(x)
    return self.cv2(jnp.concatenate((y[..., :self.c], self.m(y[..., self.c:])),
                                    -1))


class Upsample(nnx.Module):
  """Nearest-neighbour upsampling by 2 (torch's ``nn.Upsample(None, 2)``)."""

  def __call__(self, x_BxHxWxC):
    return jnp.repeat(jnp.repeat(x_BxHxWxC, 2, axis=1), 2, axis=2)


class Concat(nnx.Module):
  """Channel concatenation, inputs in the YAML's "from" order."""

  def __call__(self, xs: Sequence[jax.Array]):
    return jnp.concatenate(xs, -1)


# ----------------------------------------------------------------------------
# Detect head (ultralytics/nn/modules/head.py)
# ----------------------------------------------------------------------------


class Detect(nnx.Module):
  """The end-to-end detection head: two branches with separate weights.

  Each branch has, per level, a box head ``cv2[i]`` (two 3x3 Convs and a
  1x1 conv with bias to 4 ``ltrb`` distances in stride units) and a class
  head ``cv3[i]`` (two DWConv+Conv pairs and a 1x1 conv with bias to K
  logits). ``one2one_*`` start as copies of ``cv2``/``cv3`` (ultralytics
  deep-copies them) and see ``stop_gradient`` features, so the one-to-one
  loss does not train the backbone and neck.

  ``use_running_average`` mirrors the BatchNorms' flag (``model.train()`` and
  ``model.eval()`` set both): False returns raw outputs, True decoded ones.
  """

  def __init__(self, nc: int, ch: Sequence[int], *, rngs: nnx.Rngs):
    self.nc = nc
    c2 = max(16, ch[0] // 4, 4 * REG_MAX)
    c3 = max(ch[0], min(nc, 100))

    def head_conv(c_in, c_out, bias):
      return nnx.Conv(c_in, c_out, (1, 1), padding="VALID", use_bias=True,
                      kernel_init=_torch_conv_init,
                      bias_init=nnx.initializers.constant(bias), rngs=rngs)

    # bias_init(): boxes start at 2 strides from the anchor, classes at a
    # prior of 5 objects per 640x640 image spread over nc classes.
    self.cv2 = nnx.List([
        Sequential([Conv(x, c2, 3, rngs=rngs), Conv(c2, c2, 3, rngs=rngs),
                    head_conv(c2, 4 * REG_MAX, 2.0)])
        for x in ch])
    self.cv3 = nnx.List([
        Sequential([
            Sequential([DWConv(x, x, 3, rngs=rngs), Conv(x, c3, 1, rngs=rngs)]),
            Sequential([DWConv(c3, c3, 3, rngs=rngs),
                        Conv(c3, c3, 1, rngs=rngs)]),
            head_conv(c3, nc, math.log(5 / nc / (640 / s)**2))])
        for x, s in zip(ch, STRIDES)])
    self.one2one_cv2 = nnx.clone(self.cv2)
    self.one2one_cv3 = nnx.clone(self.cv3)
    self.use_running_average = False

  def _branch(self, feats, box_head, cls_head) -> dict[str, jax.Array]:
    B = feats[0].shape[0]
    return {
        "boxes": jnp.concatenate([box_head[i](x).reshape(B, -1, 4 * REG_MAX)
                                  for i, x in enumerate(feats)], 1),
        "scores": jnp.concatenate([cls_head[i](x).reshape(B, -1, self.nc)
                                   for i, x in enumerate(feats)], 1),
    }

  def __call__(self, feats: Sequence[jax.Array]):
    detached = [jax.lax.stop_gradient(x) for x in feats]
    raw = {"one2many": self._branch(feats, self.cv2, self.cv3),
           "one2one": self._branch(detached, self.one2one_cv2,
                                   self.one2one_cv3)}
    if not self.use_running_average:
      return raw
    anchors_Ax2, stride_Ax1 = box_ops.make_anchors(
        [(x.shape[1], x.shape[2]) for x in feats], STRIDES,
        dtype=feats[0].dtype)
    return {name: {"boxes": box_ops.dist2bbox(out["boxes"], anchors_Ax2,
                                            xywh=False) * stride_Ax1,
                   "scores": jax.nn.sigmoid(out["scores"])}
            for name, out in raw.items()}


# ----------------------------------------------------------------------------
# The model (ultralytics/cfg/models/26/yolo26.yaml)
# ----------------------------------------------------------------------------


class YOLO26(nnx.Module):
  """YOLO26 detector; ``self.model[i]`` is row i of ``yolo26.yaml``.

  Call with ``images_BxHxWx3`` (float, RGB, 0..1 as ultralytics' trainer
  feeds them; H and W multiples of 32). Returns
  ``{"one2many": {"boxes", "scores"}, "one2one": {...}}``:

  * train mode: ``boxes_BxAx4`` raw ``ltrb`` distances in stride units,
    ``scores_BxAxK`` class logits;
  * eval mode: ``boxes_BxAx4`` ``xyxy`` in input pixels, ``scores_BxAxK``
    sigmoid probabilities (`postprocess` turns the one2one branch into
    detections).

  Usage (``A = 8*8 + 4*4 + 2*2`` anchors at 64x64)::

    model = YOLO26(YOLO26Config.from_scale("n", num_classes=3),
                   rngs=nnx.Rngs(0))
    model.eval()
    out = model(images_Bx64x64x3)           # out["one2one"]["scores"]: (B, 84, 3)
    dets_Bx84x6 = postprocess(out["one2one"]["boxes"], out["one2one"]["scores"])
  """

  def __init__(self, config: YOLO26Config, *, rngs: nnx.Rngs):
    self.config = config
    ch, rep, nc = config.channels, config.repeats, config.num_classes
    c3k = config.c3k

    def c3k2(c1, base_c2, base_n, use_c3k, e=0.5, attn=False):
      return C3k2(c1, ch(base_c2), rep(base_n), use_c3k or c3k, e, attn,
                  rngs=rngs)

    def conv(c1, base_c2, k, s):
      return Conv(c1, ch(base_c2), k, s, rngs=rngs)

    p3, p4, p5 = ch(256), ch(512), ch(1024)
    self.model = nnx.List([
        conv(IN_CHANNELS, 64, 3, 2),                         # 0 P1/2
        conv(ch(64), 128, 3, 2),                             # 1 P2/4
        c3k2(ch(128), 256, 2, False, 0.25),                  # 2
        conv(ch(256), 256, 3, 2),                            # 3 P3/8
        c3k2(ch(256), 512, 2, False, 0.25),                  # 4
        conv(ch(512), 512, 3, 2),                            # 5 P4/16
        c3k2(ch(512), 512, 2, True),                         # 6
        conv(ch(512), 1024, 3, 2),                           # 7 P5/32
        c3k2(ch(1024), 1024, 2, True),                       # 8
        SPPF(p5, p5, 5, 3, True, rngs=rngs),                 # 9
        C2PSA(p5, p5, rep(2), rngs=rngs),                    # 10
        Upsample(),                                          # 11
        Concat(),                                            # 12 [-1, 6]
        c3k2(p5 + p4, 512, 2, True),                         # 13
        Upsample(),                                          # 14
        Concat(),                                            # 15 [-1, 4]
        c3k2(p4 + ch(512), 256, 2, True),                    # 16 P3 out
        conv(p3, 256, 3, 2),                                 # 17
        Concat(),                                            # 18 [-1, 13]
        c3k2(p3 + p4, 512, 2, True),                         # 19 P4 out
        conv(p4, 512, 3, 2),                                 # 20
        Concat(),                                            # 21 [-1, 10]
        c3k2(p4 + p5, 1024, 1, True, 0.5, attn=True),        # 22 P5 out
        Detect(nc, (p3, p4, p5), rngs=rngs),                 # 23
    ])

  def __call__(self, images_BxHxWx3: jax.Array):
    _check_images(images_BxHxWx3)
    m = self.model
    x = m[1](m[0](images_BxHxWx3))
    x4 = m[4](m[3](m[2](x)))                    # P3/8 backbone
    x6 = m[6](m[5](x4))                         # P4/16 backbone
    x10 = m[10](m[9](m[8](m[7](x6))))           # P5/32 backbone
    x13 = m[13](m[12]([m[11](x10), x6]))
    x16 = m[16](m[15]([m[14](x13), x4]))        # P3 out
    x19 = m[19](m[18]([m[17](x16), x13]))       # P4 out
    x22 = m[22](m[21]([m[20](x19), x10]))       # P5 out
    return m[23]([x16, x19, x22])


def _check_images(images) -> None:
  if images.ndim != 4 or images.shape[-1] != IN_CHANNELS:
    raise ValueError(f"images must be (B, H, W, {IN_CHANNELS}) NHWC, got shape"
                     f" {images.shape}.")
  h, w = images.shape[1:3]
  if h % STRIDES[-1] or w % STRIDES[-1] or h == 0 or w == 0:
    raise ValueError(f"images height and width must be positive multiples of"
                     f" {STRIDES[-1]}, got {h}x{w}.")


# ----------------------------------------------------------------------------
# Detections
# ----------------------------------------------------------------------------


def postprocess(boxes_BxAx4: jax.Array, scores_BxAxK: jax.Array,
                max_det: int = 300) -> jax.Array:
  """NMS-free detections from the one-to-one branch (eval-mode outputs).

  ultralytics' ``Detect.postprocess`` / ``get_topk_index``: keep the
  ``k = min(max_det, A)`` anchors with the highest class probability, then the
  top k of their ``k * K`` (anchor, class) scores, so one anchor may appear
  with several classes. Sorted by descending score; callers keep the rows
  with ``score > conf``. The shape is static, so it jits.

  Args:
    boxes_BxAx4: ``xyxy`` boxes (eval mode's ``out["one2one"]["boxes"]``).
    scores_BxAxK: class probabilities (``out["one2one"]["scores"]``).
    max_det: the most detections per image.

  Returns:
    ``(B, k, 6)``: ``[x1, y1, x2, y2, score, class]``, class as a float.
  """
  A, K = scores_BxAxK.shape[1:]
  k = min(max_det, A)
  _, anchor_Bxk = jax.lax.top_k(scores_BxAxK.max(-1), k)
  top_scores_BxkxK = jnp.take_along_axis(scores_BxAxK, anchor_Bxk[..., None], 1)
  score_Bxk, flat_Bxk = jax.lax.top_k(top_scores_BxkxK.reshape(-1, k * K), k)
  anchor_Bxk = jnp.take_along_axis(anchor_Bxk, flat_Bxk // K, 1)
  box_Bxkx4 = jnp.take_along_axis(boxes_BxAx4, anchor_Bxk[..., None], 1)
  cls_Bxk = (flat_Bxk % K).astype(boxes_BxAx4.dtype)
  return jnp.concatenate((box_Bxkx4, score_Bxk[..., None], cls_Bxk[..., None]),
                         -1)


def nms_postprocess(boxes_BxAx4: jax.Array, scores_BxAxK: jax.Array, *,
                    conf_threshold: float = 0.25, iou_threshold: float = 0.7,
                    max_det: int = 300, max_candidates: int = 1000) -> jax.Array:
  """Class-aware greedy NMS of the one-to-many branch, jit-able.

  A fixed-shape version of ultralytics' ``non_max_suppression`` in its
  single-label mode (each anchor keeps its best class): anchors with
  ``score > conf_threshold``, at most `max_candidates` of them by score, are
  visited in descending score and dropped when their IoU with an already
  kept box of the same class exceeds `iou_threshold`.

  Args:
    boxes_BxAx4: ``xyxy`` boxes (eval mode's ``out["one2many"]["boxes"]``).
    scores_BxAxK: class probabilities (``out["one2many"]["scores"]``).
    conf_threshold: minimum score of a detection.
    iou_threshold: IoU above which a lower-scored box of the same class is
      suppressed.
    max_det: rows of the output.
    max_candidates: boxes that enter the (quadratic) suppression.

  Returns:
    ``(B, max_det, 6)``: ``[x1, y1, x2, y2, score, class]`` sorted by score;
    rows past the kept detections are zero with class -1.
  """
  A = scores_BxAxK.shape[1]
  n = min(max_candidates, A)
  score_BxA, cls_BxA = scores_BxAxK.max(-1), scores_BxAxK.argmax(-1)
  score_Bxn, idx_Bxn = jax.lax.top_k(score_BxA, n)
  box_Bxnx4 = jnp.take_along_axis(boxes_BxAx4, idx_Bxn[..., None], 1)
  cls_Bxn = jnp.take_along_axis(cls_BxA, idx_Bxn, 1)
  iou_Bxnxn = box_ops.bbox_iou(box_Bxnx4[:, :, None], box_Bxnx4[:, None, :],
                             xywh=False)[..., 0]
  overlaps_Bxnxn = ((iou_Bxnxn > iou_threshold)
                    & (cls_Bxn[:, :, None] == cls_Bxn[:, None, :]))

  def visit(i, keep_Bxn):
    # i survives if no kept, higher-scored box (index < i) overlaps it.
    suppressed_B = jnp.any(keep_Bxn & overlaps_Bxnxn[:, :, i]
                           & (jnp.arange(n) < i), axis=1)
    return keep_Bxn.at[:, i].set(keep_Bxn[:, i] & ~suppressed_B)

  keep_Bxn = jax.lax.fori_loop(0, n, visit, score_Bxn > conf_threshold)
  rows = min(max_det, n)
  # Kept rows first, each group in score order (top_k is stable on ties).
  order_Bxn = jnp.argsort(~keep_Bxn, axis=1, stable=True)[:, :rows]
  kept_Bxr = jnp.take_along_axis(keep_Bxn, order_Bxn, 1)[..., None]
  det_Bxrx6 = jnp.concatenate(
      (jnp.take_along_axis(box_Bxnx4, order_Bxn[..., None], 1),
       jnp.take_along_axis(score_Bxn, order_Bxn, 1)[..., None],
       jnp.take_along_axis(cls_Bxn, order_Bxn, 1)[..., None].astype(
           box_Bxnx4.dtype)), -1)
  empty = jnp.array([0, 0, 0, 0, 0, -1], det_Bxrx6.dtype)
  det_Bxrx6 = jnp.where(kept_Bxr, det_Bxrx6, empty)
  return jnp.pad(det_Bxrx6, ((0, 0), (0, max_det - rows), (0, 0)),
                 constant_values=0).at[:, rows:, 5].set(-1)
