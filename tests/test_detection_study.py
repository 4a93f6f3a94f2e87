"""The YOLO26 detection study: train step, schedule, lr bracketing, CLI.

Compiling YOLO26n's train step dominates: one module-scoped compile (n at
64x64, batch 2) serves the step tests; the smoke preset compiles its own.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import yolo26_detection as study
from experiments import yolo26_m_steps
from experiments.harness import data_detection
from experiments.harness import detection_loop
from mimuon_optax.models.yolo26 import loss as yolo_loss

SIZE = 64


@pytest.fixture(scope="module")
def tiny():
  """YOLO26n (10 classes), MuSGD's step at 64x64, one batch of 2 canvases."""
  data = data_detection.make_split(data_detection.DetectionConfig(
      image_size=SIZE, num_train=2, max_scale=32), "train")
  model = detection_loop.init_model("n", study.NUM_CLASSES, 0)
  tx = study.make_optimizer("musgd", model.params, batch_size=2)
  step = detection_loop.make_train_step(model, tx, (SIZE, SIZE))
  images, targets = next(detection_loop.epoch_batches(data, 2, 0, 0,
                                                      flip=False))
  return dict(data=data, model=model, tx=tx, step=step, images=images,
              targets=targets, predict=detection_loop.make_predict(model))


def test_train_step_lowers_the_loss_and_updates_batch_stats(tiny):
  state = detection_loop.TrainState.create(tiny["model"], tiny["tx"])
  stats0 = jax.tree.map(np.asarray, state.batch_stats)
  params0 = jax.tree.map(np.asarray, state.params)
  o2m = yolo_loss.o2m_weight(0, 10)
  hparams = study.hyperparams("musgd", 0.01, 1.0, 0.0)
  losses = []
  for _ in range(6):
    state, metrics = tiny["step"](state, tiny["images"], tiny["targets"], o2m,
                                  hparams)
    losses.append(float(metrics["loss"]))
  assert all(map(math.isfinite, losses)), losses
  assert losses[-1] < 0.9 * losses[0], losses
  assert int(state.step) == 6
  # BatchNorm running statistics moved (momentum 0.03 per step), params too.
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                       state.batch_stats, stats0)
  assert min(jax.tree.leaves(moved)) > 0
  assert max(jax.tree.leaves(jax.tree.map(
      lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.params,
      params0))) > 0
  # The EMA lags the weights (decay > 0 after 6 updates).
  assert not np.allclose(jax.tree.leaves(state.ema_params)[0],
                         jax.tree.leaves(state.params)[0])


def test_gate_statistic_on_real_momenta_matches_float64_svd(tiny):
  """The instrument on the study's own matrices: after 4 MuSGD steps of
  YOLO26n, the momentum of every conv kernel, as the (kh*kw*in, out) matrix
  Muon and MiMuon's gate see, measured by `spectral_gap` ("float64" and
  "host") against float64 numpy SVD of the same float32 matrix. Batch-2
  gradients at 64 px leave the deep kernels low-rank (at most a few dozen
  spatial positions), so the rank floor ("nonzero" singular values) is
  exercised on real data, not only on planted spectra."""
  import mimuon_optax
  from mimuon_optax.models.yolo26 import optim as yolo_optim
  from test_gap import EPS32, reference_stats  # pylint: disable=import-outside-toplevel
  state = detection_loop.TrainState.create(tiny["model"], tiny["tx"])
  hparams = study.hyperparams("musgd", 0.01, 1.0, 0.0)
  for _ in range(4):
    state, _ = tiny["step"](state, tiny["images"], tiny["targets"],
                            yolo_loss.o2m_weight(0, 10), hparams)
  dims = yolo_optim.yolo26_weight_dimension_numbers(state.params)
  is_trace = lambda x: isinstance(x, optax.TraceState)
  traces = [t.trace for t in jax.tree.leaves(state.opt_state,
                                              is_leaf=is_trace)
            if is_trace(t)]
  momenta = {}
  for trace in traces:  # MuSGD's Muon and SGD parts each keep a trace
    for path, leaf in jax.tree_util.tree_leaves_with_path(trace):
      name = jax.tree_util.keystr(path)
      if getattr(leaf, "ndim", 0) == 4 and name not in momenta:
        momenta[name] = np.asarray(leaf, np.float32)
  flat_dims = {jax.tree_util.keystr(p): d for p, d in
               jax.tree_util.tree_leaves_with_path(
                   dims, is_leaf=lambda d: d is None or isinstance(
                       d, mimuon_optax.MuonDimensionNumbers))}
  by_shape = {}  # One stack per shape (as the gate batches a stack).
  for name, m in momenta.items():
    if flat_dims.get(name) is not None:
      x = m.reshape(-1, m.shape[-1])
      by_shape.setdefault(x.shape, []).append(x)
  assert sum(map(len, by_shape.values())) > 50, by_shape.keys()
  low_rank = 0
  shapes = sorted(by_shape)
  # In-graph float64 compiles once per shape (~1 s each): the 8 shapes that
  # hold the most matrices and the 4 largest; the host's LAPACK takes all.
  some = set(sorted(shapes, key=lambda s: (-len(by_shape[s]), s))[:8])
  some |= set(sorted(shapes, key=lambda s: -s[0] * s[1])[:4])
  for precision, checked in (("host", shapes), ("float64", sorted(some))):
    for shape in checked:
      stack = np.stack(by_shape[shape])
      got = mimuon_optax.spectral_gap(jnp.asarray(stack), precision=precision)
      for i, x in enumerate(stack):
        kappa, rel, rho, s = reference_stats(x)
        rank = int(np.sum(s > max(shape) * EPS32 * s[-1]))  # its floor
        assert int(got.rank[i]) == rank, (precision, shape, i)
        low_rank += precision == "host" and rank < min(shape)
        # Within the documented resolution (a gap's error bound, absolute):
        # real momenta put kappa at 1e-7 s_max and less, where the in-graph
        # float64 Gram is off by ~1e-10 s_max (5e-4 of kappa) and the host's
        # LAPACK SVD by ~1e-13.
        res = float(got.resolution[i])
        err = f"{precision} {shape} #{i}: kappa {kappa:.3g}, res {res:.3g}"
        if kappa <= res:  # unresolvable: counted as a repeat
          assert float(got.min_gap[i]) == 0, err
          continue
        assert abs(float(got.min_gap[i]) - kappa) <= res, err
        assert abs(float(got.rel_gap[i]) - rel) <= res / s[-1] * 1.001, err
        # rho = kappa sqrt(r) / median: each of kappa and median off by
        # <= res, plus float32 rounding of the result.
        rtol = 1e-6 + res / kappa + res / float(got.median_gap[i])
        np.testing.assert_allclose(float(got.rho[i]), rho, rtol=rtol,
                                   err_msg=err)
        # The study's taus: the same decision unless rho is within its error.
        for tau in (0.291, 0.763):
          if abs(rho - tau) > 2 * rtol * rho:
            assert (float(got.rho[i]) >= tau) == (rho >= tau), (err, tau)
  assert low_rank > 5, low_rank  # the rank floor mattered


def test_eval_uses_the_running_statistics(tiny):
  """Eval mode normalizes with the stored mean/var: changing them changes
  the detections; the eval graph is not the train graph."""
  model = tiny["model"]
  base = np.asarray(tiny["predict"](model.params, model.batch_stats,
                                    tiny["images"]))
  shifted = jax.tree.map(lambda v: v + 0.5, model.batch_stats)
  moved = np.asarray(tiny["predict"](model.params, shifted, tiny["images"]))
  assert base.shape == (2, 84, 6)  # 8*8 + 4*4 + 2*2 anchors at 64x64
  assert np.isfinite(base).all()
  assert not np.allclose(base[..., 4], moved[..., 4])


def test_lr_factor_is_ultralytics_warmup_then_linear():
  per_epoch, epochs = 10, 5
  warm = detection_loop.warmup_steps(per_epoch, epochs)
  assert warm == 30  # 3 warmup epochs
  lf = lambda e: (1 - e / epochs) * (1 - 0.01) + 0.01
  for step in (0, 5, 29, 30, 31, 49):
    epoch = step // per_epoch
    want = float(np.interp(step, [0, warm], [0.0, lf(epoch)]))
    got = detection_loop.lr_factor(step, per_epoch, epochs)
    assert got == pytest.approx(want, rel=1e-12), step
  assert detection_loop.lr_factor(49, per_epoch, epochs) == pytest.approx(
      lf(4))
  # One epoch: no warmup (ultralytics leaves the last epoch unwarmed).
  assert detection_loop.lr_factor(0, 10, 1) == 1.0


def _planted(peak: float, calls: list):
  def score(lr):
    calls.append(lr)
    if lr > 1.0:
      return math.nan  # diverged
    return -(math.log(lr) - math.log(peak)) ** 2
  return score


def test_choose_lr_keeps_an_inner_optimum():
  calls = []
  lr, scores, bracketed = study.choose_lr(_planted(0.01, calls),
                                          (0.003, 0.01, 0.03))
  assert (lr, bracketed) == (0.01, True)
  assert sorted(calls) == [0.003, 0.01, 0.03]


def test_choose_lr_extends_past_an_edge_until_bracketed():
  calls = []
  lr, scores, bracketed = study.choose_lr(
      _planted(0.2, calls), (0.003, 0.01, 0.03), factor=3.0, max_extend=3)
  assert calls == [0.003, 0.01, 0.03, 0.09, 0.27, 0.81]
  assert lr == 0.27 and bracketed
  calls = []
  lr, _, bracketed = study.choose_lr(_planted(1e-4, calls), (0.003, 0.01),
                                     factor=3.0, max_extend=2)
  assert calls == [0.003, 0.01, 0.001, 0.0003333]
  assert lr == 0.0003333 and not bracketed  # the budget ran out at an edge


def test_choose_lr_treats_divergence_as_worst():
  calls = []
  lr, scores, bracketed = study.choose_lr(_planted(5.0, calls), (0.3, 3.0),
                                          max_extend=1)
  assert math.isnan(scores[3.0]) and lr == 0.3  # 3.0 diverged
  assert calls == [0.3, 3.0, 0.1] and bracketed
  with pytest.raises(ValueError, match="factor"):
    study.choose_lr(_planted(1, []), (0.1,), factor=1.0)


def test_summary_pairs_test_map_and_gap_by_seed(tmp_path):
  """Planted runs: MiMuon - Muon of test mAP50-95 is (0.01, 0.03, 0.02) by
  seed and of the gap (0.01, 0.02, 0.0); sweep runs at other lrs and a
  seed the base lacks are left out."""
  cfg = study.DetectionStudyConfig(sizes=(100,), epochs=(1,),
                                   arms=("muon", "mimuon-0.5"),
                                   out=str(tmp_path))
  runs, chosen = [], {}
  planted = {"muon": ([0.30, 0.31, 0.32], [-0.02, -0.03, -0.01]),
             "mimuon-0.5": ([0.31, 0.34, 0.34], [-0.01, -0.01, -0.01])}
  for arm, (test, gap) in planted.items():
    chosen[f"100/{arm}"] = {"lr": 0.03, "val_scores": {}, "bracketed": True}
    for seed in range(3):
      runs.append({"size": 100, "arm": arm, "lr": 0.03, "seed": seed,
                   "test_map50_95": test[seed], "test_map50": 0.5,
                   "train_map50_95": test[seed] - gap[seed],
                   "gap": gap[seed], "orth_frac": {"all": 0.5}})
    runs.append({**runs[-1], "lr": 0.1, "test_map50_95": 0.9, "gap": 0.5})
  runs.append({**runs[-2], "seed": 7, "gap": 0.9, "test_map50_95": 0.9})
  rows = {r["arm"]: r for r in study.summarize(cfg, runs, chosen)}
  mean, std, significant = rows["mimuon-0.5"]["d_vs_muon"]
  assert (mean, std) == pytest.approx((0.02, 0.01))
  assert significant  # 0.02 > 2 * 0.01 / sqrt(3)
  mean, std, significant = rows["mimuon-0.5"]["d_gap_vs_muon"]
  assert (mean, std) == pytest.approx((0.01, 0.01)) and not significant
  assert "d_gap_vs_muon" not in rows["muon"]
  study.write_markdown(cfg, tmp_path, {"rows": list(rows.values()),
                                       "calibration": None})
  md = (tmp_path / "results.md").read_text()
  assert "| gap, MiMuon - Muon |" in md and "| +0.0100 ± 0.0100 |" in md


def test_layer_kinds_cover_the_model():
  names = ["model/0/conv/kernel", "model/10/m/0/attn/qkv/conv/kernel",
           "model/13/m/0/cv1/conv/kernel", "model/23/cv2/0/2/kernel",
           "model/23/one2one_cv3/1/0/1/conv/kernel"]
  assert [study.layer_kind(n.split("/")) for n in names] == [
      "backbone", "attention", "neck", "head_box", "head_cls"]
  with pytest.raises(ValueError, match="no layer index"):
    study.layer_kind(["kernel"])


def test_arms_and_bad_flags():
  assert study.arm_spec("mimuon-0.9") == ("mimuon", 0.9)
  with pytest.raises(ValueError, match="unknown arm 'mimuon-2'"):
    study.arm_spec("mimuon-2")
  with pytest.raises(ValueError, match="multiple of 32"):
    study.DetectionStudyConfig(image_size=100)
  with pytest.raises(ValueError, match="taus: 1 values for 2 mimuon arms"):
    study.DetectionStudyConfig(taus=(0.3,))
  assert study.auto_adamw_lr(10) == 0.000714
  assert study.scaled_weight_decay(16) == pytest.approx(1.25e-4)


@pytest.mark.slow  # three optimizers' YOLO26n steps compile (minutes)
def test_smoke_preset_writes_its_files(tmp_path, monkeypatch):
  monkeypatch.setenv(data_detection.CACHE_ENV, str(tmp_path / "cache"))
  out = tmp_path / "out"
  report = study.main(["--preset", "smoke", "--out", str(out)])
  for name in ("results.json", "results.jsonl", "results.md", "curves.png",
               "COMMAND.md"):
    assert (out / name).stat().st_size > 0, name
  cfg = study.DetectionStudyConfig(**study.PRESETS["smoke"])
  rows = {(r["size"], r["arm"]): r for r in report["rows"]}
  assert set(rows) == {(n, a) for n in cfg.sizes for a in cfg.arms}
  gated = rows[(cfg.sizes[0], "mimuon-0.5")]
  assert set(gated["orth_frac"]) == {*study.LAYER_KINDS, "all"}
  assert 0 <= gated["orth_frac"]["all"] <= 1
  assert len(gated["d_vs_muon"]) == 3 and len(gated["d_vs_musgd"]) == 3
  for r in report["runs"]:
    assert 0 <= r["test_map50_95"] <= 1 and math.isfinite(r["gap"])
  md = (out / "results.md").read_text()
  assert "MiMuon - MuSGD" in md and "head_cls" in md
  lines = (out / "results.jsonl").read_text().splitlines()
  assert len(lines) == len(report["runs"])
  assert json.loads(lines[0])["arm"] == cfg.arms[0]
  assert "--preset smoke" in (out / "COMMAND.md").read_text()


def test_letterbox_and_real_image_through_eval(tiny, tmp_path):
  from PIL import Image
  rgb = np.asarray(Image.open(yolo26_m_steps.bus_jpg()).convert("RGB"))
  assert rgb.shape == (1080, 810, 3)
  boxed, scale, (top, left) = yolo26_m_steps.letterbox(rgb, 128)
  assert boxed.shape == (128, 96, 3) and boxed.dtype == np.uint8
  assert scale == pytest.approx(128 / 1080) and (top, left) == (0, 0)
  padded, _, (top, left) = yolo26_m_steps.letterbox(rgb[:500], 128)
  assert padded.shape == (96, 128, 3) and top == 8  # 79 rows -> 96
  assert (padded[0] == yolo26_m_steps.LETTERBOX_GREY).all()
  with pytest.raises(ValueError, match="RGB"):
    yolo26_m_steps.letterbox(rgb[..., 0], 128)
  model = tiny["model"]
  dets = np.asarray(tiny["predict"](model.params, model.batch_stats,
                                    boxed[None]))
  assert dets.shape == (1, 16 * 12 + 8 * 6 + 4 * 3, 6)
  assert np.isfinite(dets).all()
  assert ((dets[..., 5] >= 0) & (dets[..., 5] < study.NUM_CLASSES)).all()


@pytest.mark.slow
def test_yolo26m_steps_cli(tmp_path, monkeypatch):
  """The full m model: 2 mimuon steps at 64x64 and the real image at 96
  (the 20-step measurement is `python -m experiments.yolo26_m_steps`)."""
  monkeypatch.setenv(data_detection.CACHE_ENV, str(tmp_path / "cache"))
  summary = yolo26_m_steps.main(
      ["--out", str(tmp_path / "m"), "--steps", "2", "--image-size", "64",
       "--train-images", "2", "--bus-size", "96"])
  assert summary["params"] == 21_788_308  # 21,896,248 at 80 classes
  assert summary["finite"] and summary["real_image"]["finite"]
  assert summary["real_image"]["detections_shape"][0] == 1
  assert (tmp_path / "m" / "results.md").exists()
