"""The evidence studies (tau_sweep, gen_gap, qwen3_0_6b) on tiny budgets.

Each runs its real command line, so the scripts cannot rot, and checks what
the study reports against its own raw runs: the lr kept is the argmin of the
validation loss (never the test loss), paired differences are recomputed
from the per-seed runs, the endpoints orthogonalize always / never.
"""

import json
import math

import numpy as np
import pytest

from experiments.harness import data_images
from experiments.harness import data_text
from experiments import gen_gap
from experiments import qwen3_0_6b
from experiments import tau_sweep
from experiments.harness import tau_sweep_report


def check_sweep(report, seeds, arms=None):
  runs, rows = report["runs"], {r["arm"]: r for r in report["rows"]}
  taus = report["taus"]
  assert taus == sorted(taus) and len(taus) == 3
  expected = {"adamw", "muon", "sgd-none", "sgd-rms_match"}
  expected |= {f"mimuon-{t:.3g}-none" for t in taus}
  expected.add(f"mimuon-{taus[1]:.3g}-rms_match")
  assert set(rows) == (expected if arms is None else set(arms))
  for arm, row in rows.items():
    sweep = [r for r in runs if r["arm"] == arm and r["role"] != "final"]
    kept = min(sweep, key=lambda r: r["val_loss"])
    assert row["lr"] == kept["lr"], arm  # selection reads validation only
    finals = sorted((r for r in runs if r["arm"] == arm
                     and r["role"] != "sweep"), key=lambda r: r["seed"])
    assert [r["seed"] for r in finals] == list(seeds)
    assert all(r["lr"] == row["lr"] for r in finals)
    test = [r["test_loss"] for r in finals]
    np.testing.assert_allclose(row["test_loss_mean"], np.mean(test), rtol=1e-12)
    np.testing.assert_allclose(row["test_loss_std"], np.std(test, ddof=1),
                               rtol=1e-12)
    for r in finals:
      assert math.isclose(r["gap"], r["test_loss"] - r["train_loss"])
    if arm != "muon":
      base = {r["seed"]: r["test_loss"] for r in runs
              if r["arm"] == "muon" and r["role"] != "sweep"}
      diffs = [r["test_loss"] - base[r["seed"]] for r in finals]
      np.testing.assert_allclose(row["d_test_loss_vs_muon_mean"],
                                 np.mean(diffs), rtol=1e-9, atol=1e-12)
  assert rows["muon"]["orth_frac_mean"] == 1.0
  for arm, row in rows.items():
    if arm.startswith("sgd-"):
      assert row["orth_frac_mean"] == 0.0
    if arm.startswith("mimuon-"):  # without --sweep-gated: Muon's lr
      assert row["lr"] == rows["muon"]["lr"]
      fracs = [r["orth_frac"] for r in runs
               if r["arm"] == arm and r["role"] != "sweep"]
      np.testing.assert_allclose(row["orth_frac_mean"], np.mean(fracs),
                                 rtol=1e-12)


@pytest.mark.slow
def test_tau_sweep_lm_tiny(tmp_path):
  out = tmp_path / "lm"
  arms = ("muon", "mimuon-0.6-none", "mimuon-0.6-rms_match")
  report = tau_sweep.main([
      "--task", "lm", "--model-preset", "micro", "--steps", "6",
      "--eval-every", "3", "--taus", "0.3", "0.6", "0.9", "--arms", *arms,
      "--warmup-steps", "1", "--seeds", "0", "1", "--grid-points", "2",
      "--seq-len", "16", "--batch-size", "2", "--eval-batches", "1",
      "--out", str(out)])
  check_sweep(report, (0, 1), arms)
  assert report["calibration"] is None
  assert report["task"]["tokenizer"] == "qwen3"
  assert not set(report["task"]["test_plays"]) & set(report["task"]["val_plays"])
  for name in ("runs.json", "results.csv", "results.md", "tau_sweep.png",
               "curves.png", "COMMAND.md"):
    assert (out / name).stat().st_size > 0, name
  assert "python -m experiments.tau_sweep --task lm" in (
      out / "COMMAND.md").read_text()
  # Convergence: 6 steps, evaluations at 3 and 6: the change from step 3.
  for run in report["runs"]:
    val = {c["step"]: c["val_loss"] for c in run["curve"]}
    assert math.isclose(run["val_change_last20"],
                        (val[6] - val[3]) / val[3], rel_tol=1e-9)
  for row in report["rows"]:
    assert 0 <= row["converged"] <= row["seeds"]
  assert "## Convergence" in (out / "results.md").read_text()


def test_last_change_reads_the_curve_at_eighty_percent():
  """Planted curves: the change from the last evaluation at or before 80%."""
  def run(steps, points):
    return {"steps": steps, "curve": [{"step": s, "val_loss": v}
                                      for s, v in points]}
  change = tau_sweep_report.last_change
  assert math.isclose(change(run(100, [(50, 4.0), (80, 2.0), (100, 1.99)])),
                      -0.005)
  # No evaluation exactly at 80: the one before it (70) is the start.
  assert math.isclose(change(run(100, [(70, 2.5), (90, 2.2), (100, 2.0)])),
                      -0.2)
  assert change(run(100, [(100, 2.0)])) is None  # only the final point
  assert change(run(100, [(90, 2.0), (100, 2.0)])) is None  # none <= 80


@pytest.mark.slow
def test_tau_sweep_vision_then_gen_gap_from_it(tmp_path):
  # One test (not a fixture shared by two): under pytest-xdist a module
  # fixture would run once per worker.
  sweep_dir = tmp_path / "vision"
  report = tau_sweep.main([
      "--task", "vision", "--dataset", "digits", "--steps", "6",
      "--eval-every", "6", "--calib-steps", "4", "--warmup-steps", "1",
      "--seeds", "0", "1", "--grid-points", "1", "--batch-size", "4",
      "--width", "4", "--hidden", "16", "--out", str(sweep_dir)])
  check_sweep(report, (0, 1))
  assert all("test_acc" in r for r in report["runs"])
  cal = report["calibration"]  # taus are rho quantiles of a tau=0 run
  assert cal["taus"] == report["taus"] and cal["samples"] > 0

  out = tmp_path / "gen_gap"
  runs = gen_gap.main([
      "--from-sweep", str(sweep_dir), "--dataset", "digits", "--sizes", "100",
      "400", "--seeds", "0", "1", "--steps", "5", "--warmup-steps", "1",
      "--batch-size", "4", "--width", "4", "--hidden", "16",
      "--out", str(out)])
  gated = [r for r in report["rows"] if r["optimizer"] == "mimuon"
           and r["sgd_scale"] == "none" and np.isfinite(r["tau"])]
  best = min(gated, key=lambda r: abs(r["orth_frac_mean"] - 0.5))
  saved = json.loads((out / "results.json").read_text())
  assert saved["settings"]["tau"] == best["tau"]
  assert saved["settings"]["lrs"] == {
      "adamw": report["chosen_lr"]["adamw"],
      "muon": report["chosen_lr"]["muon"], "mimuon": best["lr"]}
  assert sorted({r["n"] for r in runs}) == [100, 400]
  assert len(runs) == 3 * 2 * 2
  for r in runs:
    assert math.isclose(r["gap"], r["test_loss"] - r["train_loss"])
  assert (out / "gen_gap.png").stat().st_size > 0


def test_gen_gap_without_sweep_needs_lrs_and_tau(tmp_path):
  with pytest.raises(ValueError, match="--lrs"):
    gen_gap.run(gen_gap.GenGapConfig(out=str(tmp_path)))


@pytest.mark.slow
def test_qwen3_0_6b_micro_and_time_budget(tmp_path):
  summary = qwen3_0_6b.main([
      "--model", "micro", "--layers", "1", "--steps", "3", "--seq-len", "8",
      "--batch-size", "1", "--out", str(tmp_path / "a")])
  assert summary["steps_run"] == 3 and summary["stopped"] is None
  assert set(summary["orth_frac_by_kind"]) == {"q", "k", "v", "o", "gate",
                                               "up", "down"}
  np.testing.assert_allclose(  # the mean of the per-kind fractions
      summary["orth_frac_mean"],
      np.mean(list(summary["orth_frac_by_kind"].values())), rtol=1e-12)
  assert summary["peak_rss_gib"] > 0
  records = [json.loads(l) for l in
             (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2, 3]
  # A budget the compile alone exceeds stops after step 2 (the first step
  # whose time is projected), saying so.
  stopped = qwen3_0_6b.main([
      "--model", "micro", "--layers", "1", "--steps", "50", "--seq-len", "8",
      "--batch-size", "1", "--time-budget-s", "1", "--out", str(tmp_path / "b")])
  assert stopped["steps_run"] == 2
  assert "time-budget-s" in stopped["stopped"]


def test_compact_vocab_keeps_the_tokenization():
  a = np.array([151643, 5, 900, 5], np.uint32)
  b = np.array([900, 77], np.uint32)
  (ca, cb), vocab = data_text.compact_vocab([a, b])
  assert vocab == 4
  np.testing.assert_array_equal(ca, [3, 0, 2, 0])
  np.testing.assert_array_equal(cb, [2, 1])
  used = np.unique(np.concatenate([a, b]))
  np.testing.assert_array_equal(used[ca], a)  # invertible


def test_three_way_play_split_is_disjoint_and_complete():
  train, val, test = data_text.split_plays3(tau_sweep.VAL_PLAYS,
                                            tau_sweep.TEST_PLAYS)
  assert set(val) == set(tau_sweep.VAL_PLAYS)
  assert set(test) == set(tau_sweep.TEST_PLAYS)
  assert not set(train) & (set(val) | set(test))
  assert set(train) | set(val) | set(test) == set(data_text.list_plays())
  with pytest.raises(ValueError, match="both"):
    data_text.split_plays3(("hamlet",), ("hamlet",))


def test_split_validation_holds_out_disjoint_examples():
  x = np.arange(50, dtype=np.float32).reshape(50, 1, 1, 1)
  data = data_images.ImageData("t", x, np.arange(50, dtype=np.int32),
                               x[:5], np.zeros(5, np.int32), 10)
  rest, (x_val, y_val) = data_images.split_validation(data, 10, seed=3)
  assert len(rest.x_train) == 40 and len(x_val) == 10
  assert not set(rest.y_train) & set(y_val)
  assert set(rest.y_train) | set(y_val) == set(range(50))
  np.testing.assert_array_equal(rest.x_test, data.x_test)
  with pytest.raises(ValueError, match="n_val"):
    data_images.split_validation(data, 50, seed=0)
