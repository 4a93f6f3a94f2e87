"""Round two's studies (lm_small_data, lm_finetune, cnn_small_data), tiny budgets.

Each runs its real command line and checks what it reports against its own
raw runs: one row per arm x N with every seed, the lr kept is the argmin of
the validation loss, paired differences and slopes are recomputed from the
runs, the files land in --out and nothing tracked changes.
"""

import json
import math
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import size_study
from experiments import tau_sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tracked_outputs_written_since(t0):
  """Tracked files named like a study's outputs, modified after `t0` (other
  files may be edited by whoever shares the checkout)."""
  names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
  outputs = ("results.json", "results.csv", "results.md", "COMMAND.md")
  return [n for n in names if (n.endswith(outputs) or n.endswith(".png"))
          and (ROOT / n).exists() and (ROOT / n).stat().st_mtime >= t0]


def check_size_study(report, sizes, seeds, arm_names, own_lr=False):
  runs, rows = report["runs"], report["rows"]
  assert [(r["n"], r["arm"]) for r in rows] == [
      (n, a) for n in sizes for a in arm_names]
  for row in rows:
    n, arm = row["n"], row["arm"]
    sweep = [r for r in runs if r["n"] == n and r["arm"] == arm
             and r["role"] != "final"]
    assert row["lr"] == min(sweep, key=lambda r: r["val_loss"])["lr"]
    finals = sorted((r for r in runs if r["n"] == n and r["arm"] == arm
                     and r["role"] != "sweep"), key=lambda r: r["seed"])
    assert [r["seed"] for r in finals] == list(seeds)
    assert row["seeds"] == len(seeds)
    test = [r["test_loss"] for r in finals]
    np.testing.assert_allclose(row["test_loss_mean"], np.mean(test), rtol=1e-12)
    np.testing.assert_allclose(row["test_loss_std"], np.std(test, ddof=1),
                               rtol=1e-12)
    for r in finals:
      assert math.isclose(r["gap"], r["test_loss"] - r["train_loss"])
    if arm == "muon":
      continue
    base = {r["seed"]: r for r in runs if r["n"] == n and r["arm"] == "muon"
            and r["role"] != "sweep"}
    for m in ("test_loss", "gap"):
      diffs = np.array([r[m] - base[r["seed"]][m] for r in finals])
      np.testing.assert_allclose(row[f"d_{m}_vs_muon_mean"], diffs.mean(),
                                 rtol=1e-9, atol=1e-12)
      np.testing.assert_allclose(row[f"d_{m}_vs_muon_std"],
                                 diffs.std(ddof=1), rtol=1e-9, atol=1e-12)
      assert row[f"d_{m}_vs_muon_significant"] == bool(
          abs(diffs.mean()) > 2 * diffs.std(ddof=1) / math.sqrt(len(diffs)))
    if arm.startswith("mimuon-") and not own_lr:  # Muon's lr at this N
      muon_row = next(r for r in rows if r["n"] == n and r["arm"] == "muon")
      assert row["lr"] == muon_row["lr"]
  for fit in report["fits"]:
    sel = [r for r in rows if r["arm"] == fit["arm"]]
    for m in ("test_loss", "gap"):
      y = np.array([r[f"{m}_mean"] for r in sel])
      if np.all(y > 0):
        slope = np.polyfit(np.log([r["n"] for r in sel]), np.log(y), 1)[0]
        np.testing.assert_allclose(fit[f"{m}_slope"], slope, rtol=1e-9)
      else:
        assert fit[f"{m}_slope"] is None


def check_files(out, name, module):
  for f in ("results.json", "results.csv", "results.md", f"{name}.png",
            "COMMAND.md"):
    assert (out / f).stat().st_size > 0, f
  assert f"python -m experiments.{module} " in (out / "COMMAND.md").read_text()
  saved = json.loads((out / "results.json").read_text())
  assert saved["config"]["out"] == str(out)


def test_loglog_slope_is_the_power():
  n = np.array([1e3, 4e3, 1.6e4])
  np.testing.assert_allclose(size_study.loglog_slope(n, 5 * n**-0.75), -0.75,
                             rtol=1e-12)
  assert size_study.loglog_slope(n, [1.0, -1.0, 2.0]) is None
  assert size_study.loglog_slope([1e3], [1.0]) is None


def test_taus_from_calibration_picks_the_fraction_quantiles():
  cal = {"quantiles": [0.1, 0.5, 0.8], "taus": [0.26, 0.69, 1.06]}
  assert size_study.taus_from_calibration(cal) == [0.26, 0.69]  # 0.9, 0.5
  with pytest.raises(ValueError, match="fractions"):
    size_study.taus_from_calibration(cal, (0.7,))


@pytest.mark.slow
def test_lm_small_data_tiny(tmp_path):
  from experiments import lm_small_data
  t0 = time.time()
  out = tmp_path / "small"
  report = lm_small_data.main([
      "--model-preset", "micro", "--steps", "4", "--eval-every", "2",
      "--warmup-steps", "1", "--calib-steps", "3", "--seeds", "0", "1",
      "--grid-points", "2", "--seq-len", "16", "--batch-size", "2",
      "--eval-batches", "1", "--sizes", "200", "800", "--out", str(out)])
  cal = report["calibration"]  # fraction 0.9 / 0.5 = rho quantiles 0.1 / 0.5
  assert report["taus"] == [cal["taus"][cal["quantiles"].index(0.1)],
                            cal["taus"][cal["quantiles"].index(0.5)]]
  arms = ["adamw", "muon"] + [f"mimuon-{t:.3g}-none" for t in report["taus"]]
  check_size_study(report, [200, 800], (0, 1), arms)
  # 2 lrs for adamw and muon, 1 (Muon's) for MiMuon, + seed 1 for each arm.
  assert len(report["runs"]) == 2 * (2 + 2 + 1 + 1 + 4)
  assert report["task"]["tokenizer"] == "qwen3"
  check_files(out, "lm_small_data", "lm_small_data")
  assert tracked_outputs_written_since(t0) == []


def test_finetune_domain_is_unseen_by_pretraining():
  from experiments import lm_finetune
  from experiments import tau_sweep
  cfg = lm_finetune.LMFinetuneConfig()
  plays = set(lm_finetune.pretrain_plays(cfg))
  domain = {*cfg.ft_train_plays, *cfg.ft_val_plays, *cfg.ft_test_plays}
  assert plays and not plays & (domain | set(lm_finetune.HISTORIES))
  assert not plays & {*tau_sweep.VAL_PLAYS, *tau_sweep.TEST_PLAYS}
  with pytest.raises(ValueError, match="disjoint"):
    lm_finetune.LMFinetuneConfig(ft_val_plays=("henry_v",))
  with pytest.raises(ValueError, match="unknown plays"):
    lm_finetune.pretrain_plays(
        lm_finetune.LMFinetuneConfig(ft_test_plays=("henry_xi",)))


def test_finetune_scales_the_adamw_lr_of_non_matrix_leaves(monkeypatch):
  """Muon's AdamW part follows --grid-scale in fine-tuning, not in
  pretraining; tau_sweep.optimizer passes it on."""
  from experiments import lm_finetune
  from experiments.harness import optimizers
  cfg = lm_finetune.LMFinetuneConfig(grid_scale=0.03)
  assert math.isclose(lm_finetune.sweep_config(cfg, 10, 0.03).adam_lr, 9e-5)
  assert math.isclose(lm_finetune.sweep_config(cfg, 10, 1.0).adam_lr, 3e-3)
  seen = []
  monkeypatch.setattr(optimizers, "make_optimizer",
                      lambda opt_cfg, *a: seen.append(opt_cfg) or (None,))
  task = tau_sweep.Task(None, None, None, None, None, {})
  arm = tau_sweep.Arm("muon", "muon", "muon")
  tau_sweep.optimizer(lm_finetune.sweep_config(cfg, 10, 0.03), task, arm,
                      1e-4, 10)
  tau_sweep.optimizer(tau_sweep.TauSweepConfig(), task, arm, 1e-4, 10)
  assert [c.adam_lr for c in seen] == [pytest.approx(9e-5), 3e-3]


@pytest.mark.slow
def test_lm_finetune_tiny(tmp_path):
  from experiments import lm_finetune
  t0 = time.time()
  out = tmp_path / "ft"
  report = lm_finetune.main([
      "--model-preset", "micro", "--pretrain-steps", "3", "--steps", "4",
      "--eval-every", "2", "--warmup-steps", "1", "--taus", "0.2", "0.6",
      "--seeds", "0", "1", "--grid-points", "1", "--seq-len", "16",
      "--batch-size", "2", "--eval-batches", "1", "--sizes", "300", "900",
      "--out", str(out)])
  assert report["calibration"] is None and report["taus"] == [0.2, 0.6]
  check_size_study(report, [300, 900], (0, 1),
                   ["adamw", "muon", "mimuon-0.2-none", "mimuon-0.6-none"])
  assert len(report["runs"]) == 2 * 4 * 2  # one lr per arm, 2 seeds
  pre = report["pretraining"]
  assert pre["steps"] == 3 and math.isfinite(pre["domain_test_loss"])
  assert report["task"]["val_plays"] == ["richard_ii"]
  assert report["task"]["test_plays"] == ["henry_v"]
  check_files(out, "lm_finetune", "lm_finetune")
  assert tracked_outputs_written_since(t0) == []


def test_cnn_small_data_tiny(tmp_path):
  """Each arm sweeps its own lrs at every N and keeps its validation argmin."""
  from experiments import cnn_small_data
  t0 = time.time()
  out = tmp_path / "cnn"
  report = cnn_small_data.main([
      "--dataset", "digits", "--tau", "0.5", "--sizes", "100", "300",
      "--steps", "4", "--warmup-steps", "1", "--seeds", "0", "1",
      "--grid-points", "2", "--width", "4", "--hidden", "8",
      "--out", str(out)])
  assert report["taus"] == [0.5]
  check_size_study(report, [100, 300], (0, 1), ["muon", "mimuon-0.5-none"],
                   own_lr=True)
  for n in (100, 300):  # both arms swept the same 2 lrs, then seed 1
    for arm in ("muon", "mimuon-0.5-none"):
      lrs = [r["lr"] for r in report["runs"] if r["n"] == n
             and r["arm"] == arm and r["role"] != "final"]
      assert lrs == [0.01, 0.03]
  assert len(report["runs"]) == 2 * 2 * (2 + 1)
  assert "N (examples)" in (out / "results.md").read_text()
  check_files(out, "cnn_small_data", "cnn_small_data")
  assert tracked_outputs_written_since(t0) == []


@pytest.mark.parametrize("module",
                         ["lm_small_data", "lm_finetune", "cnn_small_data"])
def test_runs_as_a_module_with_help(module):
  # --help: ~3 s on a busy 2-core CPU; the limit catches a hang only.
  result = subprocess.run(
      [sys.executable, "-m", f"experiments.{module}", "--help"],
      capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert result.returncode == 0, result.stderr
  assert "--out" in result.stdout and "--sizes" in result.stdout


def _cnn_small_data_report():
  """A size study's results.json: MiMuon - Muon = -0.3, -0.2, -0.1 by seed
  at N = 1k and 4k, beside a sweep run and an AdamW run."""
  runs = []
  for n, base in [(1000, 1.0), (4000, 0.5)]:
    for seed, (muon, gated) in enumerate([(base, base - 0.3),
                                          (base + 0.1, base - 0.1),
                                          (base - 0.1, base - 0.2)]):
      runs += [{"n": n, "arm": "muon", "seed": seed, "test_loss": muon,
                "val_loss": muon, "lr": 0.01, "role": "final"},
               {"n": n, "arm": "mimuon-0.7-none", "seed": seed,
                "test_loss": gated, "val_loss": gated, "lr": 0.01,
                "role": "final"}]
    runs += [{"n": n, "arm": "mimuon-0.7-none", "seed": 0, "test_loss": 9.0,
              "val_loss": 9.0, "lr": 0.03, "role": "sweep"},
             {"n": n, "arm": "adamw", "seed": 0, "test_loss": 0.1,
              "val_loss": 0.1, "lr": 0.01}]
  return {"config": {"steps": 500, "batch_size": 16, "seeds": [0, 1, 2]},
          "runs": runs, "command": "python -m experiments.cnn_small_data"}


def _write_study(results, study, report, name="results.json"):
  folder = results / study
  folder.mkdir(parents=True)
  (folder / name).write_text(json.dumps(report))


def test_regime_map_pairs_each_seed_with_muon(tmp_path):
  """Δ = MiMuon - Muon per seed at each N; sweep and diverged runs left out."""
  from experiments import regime_map
  report = _cnn_small_data_report()
  rows = regime_map.paired_rows("cnn_small_data", report)
  assert [(r["n"], r["arm"]) for r in rows] == [(1000, "mimuon-0.7-none"),
                                                (4000, "mimuon-0.7-none")]
  diffs = np.array([-0.3, -0.2, -0.1])
  for r in rows:
    np.testing.assert_allclose(r["d_test_loss_mean"], diffs.mean(), atol=1e-12)
    np.testing.assert_allclose(r["d_test_loss_std"], diffs.std(ddof=1),
                               atol=1e-12)
    assert r["significant"]  # |-0.2| > 2 * 0.1 / sqrt(3)
    assert r["epochs"] == 500 * 128 / r["n"] and r["seeds"] == 3
    assert r["metric"] == "test loss"
  _write_study(tmp_path / "results", "cnn_small_data", report)
  out = tmp_path / "map"
  regime_map.main(["--results", str(tmp_path / "results"), "--out", str(out)])
  assert (out / "regime_map.png").stat().st_size > 0
  assert "-0.2000 ± 0.1000 *" in (out / "regime_map.md").read_text()
  with pytest.raises(FileNotFoundError, match="--studies"):
    regime_map.main(["--results", str(tmp_path / "none"), "--out", str(out)])


def _lm_converge_report():
  """A full-data tau sweep's runs.json: MiMuon - Muon = 0.1, 0, 0.2."""
  runs = [{"arm": a, "seed": s, "test_loss": v, "val_loss": v, "lr": 0.01,
           "role": "final"}
          for s, (m, g) in enumerate([(5.0, 5.1), (5.2, 5.2), (4.9, 5.1)])
          for a, v in (("muon", m), ("mimuon-0.687-none", g))]
  return {"config": {"steps": 2000, "batch_size": 8, "seq_len": 64,
                     "seeds": [0, 1, 2]},
          "task": {"train_tokens": 1_024_000}, "runs": runs}


def test_regime_map_reads_a_full_data_tau_sweep(tmp_path):
  """A tau sweep's runs.json (no per-run N) is one point at the task's N."""
  from experiments import regime_map
  _write_study(tmp_path / "results", "lm_converge", _lm_converge_report(),
               "runs.json")
  out = tmp_path / "map"
  rows = regime_map.main(["--results", str(tmp_path / "results"),
                          "--studies", "lm_converge", "--out", str(out)])
  (row,) = rows
  assert row["n"] == 1_024_000 and row["epochs"] == 2000 * 512 / 1_024_000
  diffs = np.array([0.1, 0.0, 0.2])
  np.testing.assert_allclose(row["d_test_loss_mean"], diffs.mean(),
                             atol=1e-12)
  np.testing.assert_allclose(row["d_test_loss_std"], diffs.std(ddof=1),
                             atol=1e-12)


def _row(study, task, arm, n, own_lr, val_loss, **kw):
  return {"study": study, "task": task, "setting": "small data",
          "round_one": False, "arm": arm, "n": n, "unit": "tokens",
          "steps": 200, "epochs": 1.0, "seeds": 3, "own_lr": own_lr,
          "lr_grid": [1e-3, 3e-3, 1e-2] if own_lr else [], "orth_frac": 0.52,
          "metric": "test loss", "val_loss": val_loss,
          "d_test_loss_mean": -0.01, "d_test_loss_std": 0.02,
          "significant": False, **kw}


def test_regime_map_greys_what_a_better_run_supersedes():
  from experiments import regime_map
  rows = regime_map.mark_current([
      _row("muons_lr", "LM", "mimuon-0.7-none", 16000, False, 3.0),
      _row("own_a", "LM", "mimuon-0.7-none", 16000, True, 3.5),
      _row("own_b", "LM", "mimuon-0.7-none", 16000, True, 3.4),  # better tuned
      _row("muons_lr", "LM", "mimuon-0.7-none", 64000, False, 3.0),
      _row("round1", "LM", "mimuon-0.2-none", 64000, False, 3.0,
           round_one=True),
      _row("own_a", "CNN", "mimuon-0.7-none", 16000, True, 9.0)])
  assert [r["current"] for r in rows] == [False, False, True, True, False,
                                          True]
  assert regime_map.series_label(rows[2:3]) == (
      "MiMuon, orth. fraction 0.5: small data, 200 steps, own lr (grid 0.001"
      " to 0.01)")
  assert regime_map.series_label(rows[3:4]).endswith("200 steps, Muon's lr")


def _texts_overlap(fig):
  """Pairs of visible, non-empty texts of a drawn figure whose boxes
  overlap, and legends that overlap an axes or another legend. Tick labels
  beyond an axis' limits count as not drawn (matplotlib keeps them
  visible, at their would-be place, but does not draw them)."""
  import matplotlib.text
  renderer = fig.canvas.get_renderer()
  undrawn = {id(tick.label1) for ax in fig.axes
             for axis in (ax.xaxis, ax.yaxis)
             for tick in axis.get_major_ticks() + axis.get_minor_ticks()
             if not (min(axis.get_view_interval()) <= tick.get_loc()
                     <= max(axis.get_view_interval()))}
  texts = [t for t in fig.findobj(matplotlib.text.Text)
           if t.get_visible() and t.get_text().strip()
           and id(t) not in undrawn]
  boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
  bad = [(a, b) for i, (a, ba) in enumerate(boxes)
         for b, bb in boxes[i + 1:] if ba.overlaps(bb)]
  legends = [ax.get_legend().get_window_extent(renderer) for ax in fig.axes]
  panels = [ax.get_window_extent(renderer) for ax in fig.axes]
  bad += [("legend", "panel") for lg in legends for p in panels
          if lg.overlaps(p)]
  bad += [("legend", "legend") for i, a in enumerate(legends)
          for b in legends[i + 1:] if a.overlaps(b)]
  return bad


def test_regime_map_of_the_committed_results_reads(tmp_path):
  """The committed studies: one panel per task, no text over another, a
  legend in words, round one grey, nothing current that an own-lr run at the
  same task, N and arm supersedes."""
  from experiments import regime_map
  rows = regime_map.main(["--out", str(tmp_path)])
  assert (tmp_path / "regime_map.png").stat().st_size > 0
  fig = regime_map.figure(rows)
  fig.canvas.draw()
  titles = [ax.get_title() for ax in fig.axes]
  assert titles == [title for task, title in regime_map.TASKS.items()
                    if any(r["task"] == task for r in rows)]
  assert titles[:2] == [regime_map.TASKS["LM"], regime_map.TASKS["CNN"]]
  assert _texts_overlap(fig) == []
  for ax in fig.axes:
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-1].startswith("grey:")
    assert all(l.startswith("MiMuon, orth. fraction ") for l in labels[:-1])
    assert not any("mimuon-" in l for l in labels), labels
  assert all(not r["current"] for r in rows if r["round_one"])
  own = {(r["task"], r["n"], r["arm"]) for r in rows if r["own_lr"]}
  assert all((r["task"], r["n"], r["arm"]) not in own
             for r in rows if r["current"] and not r["own_lr"])
  assert sum(r["current"] and r["own_lr"] for r in rows) >= 8
  import matplotlib.pyplot as plt
  plt.close(fig)


def test_regime_map_has_a_panel_per_task_and_room_for_detection():
  from experiments import regime_map
  rows = regime_map.mark_current([
      _row("a", task, "mimuon-0.7-none", n, True, 1.0)
      for task in ("detection", "CNN", "LM") for n in (1000, 1200, 4000)])
  fig = regime_map.figure(rows)
  fig.canvas.draw()
  assert [ax.get_title() for ax in fig.axes] == [
      regime_map.TASKS[t] for t in ("LM", "CNN", "detection")]
  assert _texts_overlap(fig) == []
  import matplotlib.pyplot as plt
  plt.close(fig)


# Test mAP50-95 of Muon by seed; MiMuon's is Muon's + these, per N.
_MUON_MAP = (0.30, 0.31, 0.29)
_MIMUON_GAIN = {800: (0.015, 0.02, 0.025), 200: (0.0, -0.02, -0.01)}


def _detection_report():
  """`yolo26_detection`'s results.json, summarized by the study itself: N =
  800 and 200, Muon and MiMuon, seed 0 sweeping 0.01 / 0.03 / 0.1 (0.03
  kept), seeds 1 and 2 at 0.03; validation mAP = test + 0.01."""
  import dataclasses
  from experiments import yolo26_detection
  cfg = yolo26_detection.DetectionStudyConfig(
      sizes=(800, 200), epochs=(3, 12), batch_size=8, taus=(0.3,),
      arms=("muon", "mimuon-0.5"))
  runs, chosen = [], {}
  for size in cfg.sizes:
    for arm in cfg.arms:
      gains = _MIMUON_GAIN[size] if arm != "muon" else (0.0,) * 3
      test = [m + g for m, g in zip(_MUON_MAP, gains)]
      sweep = {0.01: 0.1, 0.03: test[0], 0.1: 0.1}  # seed 0's test mAP
      for lr, seed, role, mAP in [*((lr, 0, "sweep", v) for lr, v in
                                    sweep.items()),
                                  (0.03, 1, "final", test[1]),
                                  (0.03, 2, "final", test[2])]:
        runs.append({"size": size, "arm": arm, "lr": lr, "seed": seed,
                     "role": role, "steps": 300, "test_map50_95": mAP,
                     "val_map50_95": mAP + 0.01, "test_map50": mAP,
                     "train_map50_95": mAP, "gap": 0.0,
                     **({"orth_frac": {"all": 0.5}} if arm != "muon"
                        else {})})
      chosen[f"{size}/{arm}"] = {
          "lr": 0.03, "val_scores": {lr: v + 0.01 for lr, v in sweep.items()},
          "bracketed": True}
  return {"config": dataclasses.asdict(cfg), "chosen_lr": chosen,
          "rows": yolo26_detection.summarize(cfg, runs, chosen),
          "runs": runs, "command": "python -m experiments.yolo26_detection"}


def test_regime_map_draws_detection_as_a_third_panel(tmp_path):
  """Detection's Δ is Muon - MiMuon of the test mAP50-95 (< 0: MiMuon
  better, as on the loss panels), at each N the study ran."""
  from experiments import regime_map
  results = tmp_path / "results"
  _write_study(results, "cnn_small_data", _cnn_small_data_report())
  _write_study(results, "lm_converge", _lm_converge_report(), "runs.json")
  detection = json.loads(json.dumps(_detection_report()))  # as read back
  assert [r["d_vs_muon"][0] for r in detection["rows"] if "d_vs_muon" in r
          ] == pytest.approx([0.02, -0.01])
  _write_study(results, "yolo26_detection", detection)
  out = tmp_path / "map"
  every_row = regime_map.main(["--results", str(results), "--out", str(out)])
  rows = [r for r in every_row if r["study"] == "yolo26_detection"]
  assert [(r["n"], r["arm"]) for r in rows] == [(800, "mimuon-0.5"),
                                                (200, "mimuon-0.5")]
  np.testing.assert_allclose([r["d_test_loss_mean"] for r in rows],
                             [-0.02, 0.01], atol=1e-12)
  np.testing.assert_allclose([r["d_test_loss_std"] for r in rows],
                             [0.005, 0.01], atol=1e-12)
  assert [r["significant"] for r in rows] == [True, False]
  assert [r["epochs"] for r in rows] == [3, 12]
  for r in rows:
    assert (r["task"], r["metric"], r["unit"]) == (
        "detection", "test mAP50-95", "images")
    assert r["own_lr"] and r["current"] and r["lr_grid"] == [0.01, 0.03, 0.1]
    assert (r["steps"], r["seeds"], r["orth_frac"]) == (300, 3, 0.5)
    muon = np.array(_MUON_MAP)
    mimuon = muon + _MIMUON_GAIN[r["n"]]
    np.testing.assert_allclose(r["val_loss"],
                               -np.mean((muon + mimuon) / 2 + 0.01))
  table = (out / "regime_map.md").read_text()
  assert "| test mAP50-95, Muon - MiMuon | -0.0200 ± 0.0050 * |" in table
  assert "| test loss, MiMuon - Muon | -0.2000 ± 0.1000 * |" in table
  fig = regime_map.figure(every_row)
  fig.canvas.draw()
  assert [ax.get_title() for ax in fig.axes] == [
      regime_map.TASKS[t] for t in ("LM", "CNN", "detection")]
  assert [ax.get_ylabel() for ax in fig.axes] == [
      "paired Δ test loss, MiMuon - Muon (< 0: MiMuon better)"] * 2 + [
      "paired Δ test mAP50-95, Muon - MiMuon (< 0: MiMuon better)"]
  assert _texts_overlap(fig) == []
  import matplotlib.pyplot as plt
  plt.close(fig)
