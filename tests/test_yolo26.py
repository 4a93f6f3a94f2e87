"""YOLO26 (NNX) against ultralytics 8.4.190's torch model, float32.

Models are built from YAML (``DetectionModel("yolo26n.yaml", nc=...)``, no
downloaded weights) with random weights; the BatchNorm affine parameters and
running statistics are randomized too, so eval mode is not the identity
normalization. The torch state_dict is loaded into the NNX model and both are
run on the same images.

Tolerance: 1e-4 absolute on outputs of order one; scores/boxes that reach
tens or hundreds of units (logits, pixel boxes) are compared at 1e-4 of their
largest magnitude (float32 rounding through ~100 layers scales with it).
"""

import copy
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from ultralytics.nn.modules.head import Detect as TorchDetect
from ultralytics.nn.tasks import DetectionModel, parse_model, yaml_model_load
from ultralytics.utils.nms import non_max_suppression

from mimuon_optax.models.yolo26 import boxes
from mimuon_optax.models.yolo26.modeling import (
  BN_MOMENTUM,
  STRIDES,
  YOLO26,
  Detect,
  YOLO26Config,
  nms_postprocess,
  postprocess,
)
from mimuon_optax.models.yolo26.params import (
  fuse_batchnorm,
  load_ultralytics_state_dict,
  save_ultralytics_safetensors,
  to_ultralytics_state_dict,
)

TOL = 1e-4


def assert_close(ours, ref, what):
  ours, ref = np.asarray(ours), np.asarray(ref)
  assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
  err, bound = np.abs(ours - ref).max(), TOL * max(1.0, np.abs(ref).max())
  assert err <= bound, f"{what}: max |diff| {err:.3g} > {bound:.3g}"


def _torch_model(scale, nc):
  torch.manual_seed(0)
  model = DetectionModel(f"yolo26{scale}.yaml", nc=nc, verbose=False)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
        m.running_mean.normal_(0, 0.2)
        m.running_var.uniform_(0.5, 2.0)
    for i in range(3):  # spread the head biases so top-k is not a tie-break
      for head in (model.model[-1].cv3, model.model[-1].one2one_cv3):
        head[i][-1].bias.normal_(-3.0, 1.0)
  return model


def _nchw_to_nhwc(x):
  return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def _torch_BxAxC(x):  # ultralytics' (B, C, A) -> ours (B, A, C)
  return x.detach().numpy().transpose(0, 2, 1)


@nnx.jit
def _forward(model, images):
  return model(images)


@functools.cache
def _parity_run(scale, nc, imgsz):
  """Runs both models once (eval, then one train step); cached per case."""
  batch = 2 if imgsz <= 160 else 1
  tm = _torch_model(scale, nc)
  state_dict = {k: v.numpy().copy() for k, v in tm.state_dict().items()}
  model = load_ultralytics_state_dict(YOLO26Config.from_scale(scale, nc),
                                      state_dict)
  torch.manual_seed(1)
  x = torch.rand(batch, 3, imgsz, imgsz)
  run = {"state_dict": state_dict}

  tm.eval()
  model.eval()
  head = tm.model[-1]
  with torch.no_grad():
    y_o2m, raw = tm(x)  # default (end2end False): one2many, xywh
    head.end2end = True
    y_o2o = head._inference(raw["one2one"])  # one2one decoded, xyxy
    y_post = tm(x)[0]  # one2one after Detect.postprocess
    head.end2end = False
  run["torch_eval"] = dict(o2m=_torch_BxAxC(y_o2m), o2o=_torch_BxAxC(y_o2o),
                           post=y_post.numpy())
  run["eval"] = jax.tree.map(np.asarray, _forward(model, _nchw_to_nhwc(x)))

  tm.train()
  model.train()
  raw = tm(x)
  run["torch_train"] = {br: {k: _torch_BxAxC(raw[br][k])
                             for k in ("boxes", "scores")}
                        for br in ("one2one", "one2many")}
  run["train"] = jax.tree.map(np.asarray, _forward(model, _nchw_to_nhwc(x)))
  run["torch_after"] = {k: v.numpy() for k, v in tm.state_dict().items()}
  run["after"] = to_ultralytics_state_dict(model)
  run["batch"] = batch
  return run


# Each scale at each image size and each class count: n in the fast step, m
# (20-40 s a case on 2 cores) in the slow one. The two remaining cases of the
# full cross (n and m x 80/10 classes x 160/320 px) pass too.
FAST_CASES = [("n", 80, 160), ("n", 10, 320)]
SLOW_CASES = [("m", 80, 160), ("m", 10, 320)]


# One test per case: the two models run once and every comparison reads that
# run (separate tests could land on different xdist workers and rerun it).
@pytest.mark.parametrize("scale,nc,imgsz", FAST_CASES + [
    pytest.param(*case, marks=pytest.mark.slow) for case in SLOW_CASES])
def test_outputs_match_ultralytics(scale, nc, imgsz):
  run = _parity_run(scale, nc, imgsz)
  _check_eval(run, nc, imgsz)
  _check_train(run)
  _check_running_stats(run, imgsz)


def _check_eval(run, nc, imgsz):
  ref, out = run["torch_eval"], run["eval"]
  A = sum((imgsz // s)**2 for s in STRIDES)
  assert out["one2one"]["scores"].shape == (run["batch"], A, nc)
  assert_close(boxes.xyxy2xywh(out["one2many"]["boxes"]), ref["o2m"][..., :4],
               "eval one2many boxes (xywh px)")
  assert_close(out["one2many"]["scores"], ref["o2m"][..., 4:],
               "eval one2many scores")
  assert_close(out["one2one"]["boxes"], ref["o2o"][..., :4],
               "eval one2one boxes (xyxy px)")
  assert_close(out["one2one"]["scores"], ref["o2o"][..., 4:],
               "eval one2one scores")
  # The NMS-free detections against ultralytics' (from its own outputs): the
  # top-k scores row by row. A random net scores many anchors alike (to
  # ~1e-7, less than the float32 noise between the two ports), so which of
  # the tied anchors and classes fill the rows is not comparable here;
  # `test_postprocess_matches_ultralytics_topk` checks whole rows exactly on
  # shared inputs.
  dets = np.asarray(postprocess(out["one2one"]["boxes"],
                                out["one2one"]["scores"]))
  assert dets.shape == ref["post"].shape
  assert_close(dets[..., 4], ref["post"][..., 4], "postprocess scores")


def _check_train(run):
  for branch in ("one2many", "one2one"):
    for key in ("boxes", "scores"):
      assert_close(run["train"][branch][key], run["torch_train"][branch][key],
                   f"train {branch} {key}")


def _check_running_stats(run, imgsz):
  """One train step moves the running stats as torch does (momentum 0.03).

  torch updates running_var with the unbiased batch variance, Flax with the
  biased one, so the var increments differ by n / (n - 1), n = B*H*W of the
  BatchNorm's input: each of ours, scaled by that factor for one of the
  model's map sizes, must match torch's (the 5x5 maps of P5 at 160 px show
  the difference: 2% there).
  """
  before, ours, ref = run["state_dict"], run["after"], run["torch_after"]
  map_sizes = np.array([run["batch"] * (imgsz // s)**2
                        for s in (2, 4, 8, 16, 32)])
  n_var, n_smallest = 0, 0
  for name, value in ours.items():
    if name.endswith("running_mean"):
      assert not np.allclose(value, before[name]), name  # it moved
      assert_close(value, ref[name], name)
    elif name.endswith("running_var"):
      ours_step = value - BN_MOMENTUM * before[name]
      ref_step = ref[name] - BN_MOMENTUM * before[name]
      errors = [np.abs(ours_step * n / (n - 1) - ref_step).max()
                for n in map_sizes]
      best = int(np.argmin(errors))
      # float32 rounding of the stored values (~1) and of the step (~0.03).
      tol = 1e-6 * np.abs(ref[name]).max() + 2e-5 * np.abs(ref_step).max()
      assert errors[best] <= tol, (name, errors, tol)
      if best == len(map_sizes) - 1:
        assert np.abs(ours_step - ref_step).max() > tol  # the factor matters
        n_smallest += 1
      n_var += 1
    else:
      np.testing.assert_array_equal(value, ref[name], err_msg=name)
  assert n_var == sum(k.endswith("running_var") for k in ref)
  assert n_smallest > 0


def _meta_torch_model(scale, nc):
  """ultralytics' module tree for the scale on the meta device (shapes only:
  no memory, no init), under DetectionModel's state_dict names."""
  d = yaml_model_load(f"yolo26{scale}.yaml")
  d["nc"] = nc
  wrapper = torch.nn.Module()
  with torch.device("meta"):
    wrapper.model, _ = parse_model(copy.deepcopy(d), ch=3, verbose=False)
  return wrapper


@functools.cache
def _abstract_yolo26n():
  return nnx.eval_shape(lambda: YOLO26(YOLO26Config.from_scale("n"),
                                       rngs=nnx.Rngs(0)))


def test_param_counts_and_names_match_ultralytics_at_every_scale():
  counts = {}
  for scale in "nslmx":
    torch_model = _meta_torch_model(scale, 80)
    ours = _abstract_yolo26n() if scale == "n" else nnx.eval_shape(
        lambda s=scale: YOLO26(YOLO26Config.from_scale(s), rngs=nnx.Rngs(0)))
    counts[scale] = sum(x.size for x in jax.tree.leaves(
        nnx.state(ours, nnx.Param)))
    assert counts[scale] == sum(p.numel() for p in torch_model.parameters())
    # Every torch tensor has its NNX leaf with the right shape: the only
    # problem reported is the planted one.
    state_dict = {**torch_model.state_dict(), "x": np.zeros(1)}
    with pytest.raises(ValueError, match=r"\(1 problems\):\n  unexpected tensor 'x'"):
      load_ultralytics_state_dict(ours, state_dict)
  # ultralytics' published summaries (yolo26.yaml) at 80 classes.
  assert (counts["n"], counts["m"]) == (2_572_280, 21_896_248)


def test_config_widths_and_c3k():
  n, m = YOLO26Config.from_scale("n"), YOLO26Config.from_scale("m")
  assert [n.channels(c) for c in (64, 256, 1024)] == [16, 64, 256]
  assert [m.channels(c) for c in (64, 256, 1024)] == [64, 256, 512]
  assert (n.c3k, m.c3k, YOLO26Config.from_scale("x").c3k) == (False, True, True)
  assert YOLO26Config.from_scale("l").repeats(2) == 2 and n.repeats(2) == 1
  with pytest.raises(ValueError, match="scale"):
    YOLO26Config.from_scale("q")
  with pytest.raises(ValueError, match="num_classes"):
    YOLO26Config.from_scale("n", num_classes=0)


def _random_model(build, seed=0):
  """`build()`'s module with random weights and BatchNorm statistics.

  Built abstractly and filled from numpy: no init is compiled. Kernels are
  U(+-1/sqrt(fan_in)) as torch initializes them.
  """
  graphdef, state = nnx.split(nnx.eval_shape(build))
  rng = np.random.default_rng(seed)

  def draw(path, var):
    shape, leaf = var.shape, path[-1]
    if leaf == "kernel":
      bound = 1 / np.sqrt(np.prod(shape[:3]))
      value = rng.uniform(-bound, bound, shape)
    elif leaf in ("scale", "var"):
      value = rng.uniform(0.5, 1.5, shape)
    elif leaf == "mean" or "bn" in path:
      value = rng.normal(0, 0.1, shape)
    else:  # a head conv's bias
      value = rng.normal(-1, 1, shape)
    return var.replace(jnp.asarray(value, var.dtype))

  state = nnx.from_flat_state([(path, draw(path, var))
                               for path, var in nnx.to_flat_state(state)])
  return nnx.merge(graphdef, state)


def _random_yolo26(scale="n", nc=80, seed=0):
  config = YOLO26Config.from_scale(scale, num_classes=nc)
  return _random_model(lambda: YOLO26(config, rngs=nnx.Rngs(0)), seed)


def test_state_dict_round_trip_and_torch_accepts_it(tmp_path):
  model = _random_yolo26(nc=10)
  state_dict = to_ultralytics_state_dict(model)
  assert state_dict["model.0.conv.weight"].shape == (16, 3, 3, 3)  # OIHW
  assert state_dict["model.10.m.0.attn.pe.conv.weight"].shape == (128, 1, 3, 3)
  tm = _meta_torch_model("n", 10)
  tm.load_state_dict({k: torch.tensor(v) for k, v in state_dict.items()},
                     strict=True, assign=True)
  from_torch = {k: v.numpy() for k, v in tm.state_dict().items()}
  target = nnx.clone(model)
  nnx.update(target, jax.tree.map(jnp.zeros_like, nnx.state(target)))
  again = to_ultralytics_state_dict(load_ultralytics_state_dict(target,
                                                                from_torch))
  assert set(again) == set(state_dict)
  for name, value in again.items():
    np.testing.assert_array_equal(value, state_dict[name], err_msg=name)
  # A safetensors file of it loads into an existing model, in place.
  path = tmp_path / "yolo26n.safetensors"
  save_ultralytics_safetensors(model, path)
  other = nnx.clone(model)
  other.model[0].conv.kernel[...] = jnp.zeros_like(other.model[0].conv.kernel)
  assert load_ultralytics_state_dict(other, path) is other
  for name, value in to_ultralytics_state_dict(other).items():
    np.testing.assert_array_equal(value, state_dict[name], err_msg=name)


def test_state_dict_errors_list_every_problem():
  scale_s = _meta_torch_model("s", 80).state_dict()
  with pytest.raises(ValueError,
                     match=r"scale 'n' with 80 classes \(\d+ problems") as info:
    load_ultralytics_state_dict(_abstract_yolo26n(), scale_s)
  assert ("wrong shape for 'model.0.conv.weight': expected (16, 3, 3, 3),"
          " got (32, 3, 3, 3)") in str(info.value)

  good = _meta_torch_model("n", 3).state_dict()
  bad = dict(good)
  del bad["model.9.cv1.bn.running_var"]
  bad["model.23.cv2.0.2.weight"] = torch.empty(5, 16, 1, 1, device="meta")
  bad["model.24.conv.weight"] = torch.empty(3, device="meta")
  with pytest.raises(ValueError, match=r"\(3 problems\)") as info:
    load_ultralytics_state_dict(YOLO26Config.from_scale("n", num_classes=3),
                                bad)
  message = str(info.value)
  assert "missing tensor 'model.9.cv1.bn.running_var' (128,)" in message
  assert "wrong shape for 'model.23.cv2.0.2.weight'" in message
  assert "unexpected tensor 'model.24.conv.weight' (3,)" in message
  with pytest.raises(ValueError, match=r"80 classes \(\d+ problems"):
    load_ultralytics_state_dict(_abstract_yolo26n(), good)


def test_one2one_branch_does_not_train_the_features():
  """The one2one loss reaches its own head only (torch's x.detach())."""
  head = _random_model(lambda: Detect(3, (16, 32, 32), rngs=nnx.Rngs(0)))
  head.train()
  feats = [jax.random.normal(jax.random.key(i), (2, 32 // s, 32 // s, c))
           for i, (s, c) in enumerate(zip(STRIDES, (16, 32, 32)))]

  @nnx.jit
  @functools.partial(nnx.grad, argnums=(0, 1))
  def grads(head, feats):
    out = head(feats)["one2one"]
    return out["boxes"].sum() + out["scores"].sum()

  g_head, g_feats = grads(head, feats)
  assert all(np.all(np.asarray(g) == 0) for g in g_feats)
  for i in range(3):
    assert np.abs(np.asarray(g_head["one2one_cv3"][i][2]["kernel"])).max() > 0
    assert np.abs(np.asarray(g_head["one2one_cv2"][i][0]["conv"]["kernel"])
                  ).max() > 0
    assert np.all(np.asarray(g_head["cv3"][i][2]["kernel"]) == 0)


def _torch_detect_head(nc, max_det):
  # Detect.postprocess reads nc, max_det and the class-level flags only.
  head = TorchDetect.__new__(TorchDetect)
  torch.nn.Module.__init__(head)
  head.nc, head.max_det = nc, max_det
  return head


def test_postprocess_matches_ultralytics_topk():
  rng = np.random.default_rng(0)
  for A, K, max_det in ((500, 7, 300), (84, 3, 300), (500, 1, 50)):
    xy = rng.uniform(0, 300, (2, A, 2))
    boxes_BxAx4 = np.concatenate((xy, xy + rng.uniform(1, 50, (2, A, 2))), -1)
    scores_BxAxK = rng.uniform(size=(2, A, K))
    ours = jax.jit(postprocess, static_argnums=2)(
        jnp.asarray(boxes_BxAx4, jnp.float32),
        jnp.asarray(scores_BxAxK, jnp.float32), max_det)
    preds = torch.from_numpy(np.concatenate((boxes_BxAx4, scores_BxAxK),
                                            -1).astype(np.float32))
    ref = _torch_detect_head(K, max_det).postprocess(preds).numpy()
    assert ours.shape == ref.shape == (2, min(max_det, A), 6)
    np.testing.assert_array_equal(np.asarray(ours), ref)


def test_nms_postprocess_keeps_the_best_of_each_overlapping_group():
  # Two clusters of class 0 and one box of class 1 on top of the first.
  b = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60],
                [0, 0, 10, 10], [51, 50, 61, 60], [200, 200, 210, 210]],
               np.float32)[None]
  s = np.array([[.9, 0], [.8, 0], [.7, 0], [0, .6], [.95, 0], [.1, 0]],
               np.float32)[None]
  dets = np.asarray(nms_postprocess(jnp.asarray(b), jnp.asarray(s),
                                    iou_threshold=0.5, max_det=5))
  np.testing.assert_allclose(dets[0, :, 4], [.95, .9, .6, 0, 0])
  np.testing.assert_array_equal(dets[0, :, 5], [0, 0, 1, -1, -1])
  np.testing.assert_array_equal(dets[0, 0, :4], b[0, 4])
  np.testing.assert_array_equal(dets[0, 1, :4], b[0, 0])


def test_nms_postprocess_matches_ultralytics_nms(monkeypatch):
  # Without torchvision in sys.modules ultralytics runs its pure-torch NMS
  # (torchvision's C ops do not load against this torch).
  monkeypatch.delitem(sys.modules, "torchvision", raising=False)
  rng = np.random.default_rng(0)
  B, A, K = 2, 400, 3
  xy = rng.uniform(0, 100, (B, A, 2))
  boxes_BxAx4 = np.concatenate((xy, xy + rng.uniform(30, 120, (B, A, 2))),
                               -1).astype(np.float32)
  scores_BxAxK = rng.uniform(size=(B, A, K)).astype(np.float32)
  ours = np.asarray(jax.jit(functools.partial(
      nms_postprocess, conf_threshold=0.3, iou_threshold=0.4, max_det=300))(
          jnp.asarray(boxes_BxAx4), jnp.asarray(scores_BxAxK)))
  xywh = np.asarray(boxes.xyxy2xywh(jnp.asarray(boxes_BxAx4)))
  prediction = torch.from_numpy(np.concatenate((xywh, scores_BxAxK), -1)
                                ).permute(0, 2, 1)
  ref = non_max_suppression(prediction, conf_thres=0.3, iou_thres=0.4,
                            max_det=300)
  for ours_Kx6, ref_Nx6 in zip(ours, ref):
    n = len(ref_Nx6)
    assert 10 < n < 200 and np.all(ours_Kx6[n:, 5] == -1)  # it suppressed
    np.testing.assert_allclose(ours_Kx6[:n], ref_Nx6.numpy(), atol=1e-4)


def test_fused_batchnorm_matches_unfused_eval():
  """Folding is checked on the blocks that hold every kind of Conv (plain,
  unactivated, depth-wise, attention's) rather than the whole model: the
  same code folds them all, at a fraction of the compile time."""
  model = _random_yolo26(nc=10)
  model.eval()
  fused = fuse_batchnorm(model)
  assert model.model[0].bn is not None and fused.model[0].bn is None
  keys = jax.random.split(jax.random.key(0), 5)
  x9 = jax.random.normal(keys[0], (1, 4, 4, 256))        # SPPF
  x22 = jax.random.normal(keys[1], (1, 4, 4, 384))       # C3k2 + PSABlock
  feats = [jax.random.normal(k, (1, 32 // s, 32 // s, c))  # Detect
           for k, s, c in zip(keys[2:], STRIDES, (64, 128, 256))]

  @nnx.jit
  def blocks(m):
    return m.model[9](x9), m.model[22](x22), m.model[23](feats)

  ours, ref = blocks(fused), blocks(model)
  for i, (a, b) in enumerate(zip(jax.tree.leaves(ours), jax.tree.leaves(ref))):
    assert_close(a, b, f"fused output {i}")
  with pytest.raises(ValueError, match="folded"):
    to_ultralytics_state_dict(fused)


@pytest.mark.parametrize("shape,match", [
    ((64, 64, 3), "images must be"), ((1, 64, 64, 4), "images must be"),
    ((1, 3, 64, 64), "images must be"), ((1, 100, 64, 3), "multiples of 32")])
def test_bad_images_raise(shape, match):
  model = _abstract_yolo26n()
  with pytest.raises(ValueError, match=match):
    model(jnp.zeros(shape))
