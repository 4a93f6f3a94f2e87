"""Experiments for mimuon_optax: one module per study, on a shared harness.

Each study is a module directly in this folder, run from the repository
root as `python -m experiments.<name>` (`--help` lists its flags), with a
dataclass config and a `main` that is one `harness.cli.study_main` call
(the single-run scripts train_lm and train_vision call `cli.parse_config`,
with the same checks, and print their final losses):

  train_lm        Qwen3-architecture LM on Shakespeare (AdamW / Muon / MiMuon)
  train_vision    small CNN (or MLP) on Fashion-MNIST / digits
  compare         the three optimizers on one task -> markdown table + plot
  tau_sweep       Muon vs MiMuon across tau: lr on validation, seeds on test
  size_study      tau_sweep's protocol at several training-set sizes N (the
                  part lm_small_data, lm_finetune and cnn_small_data share)
  gen_gap         generalization gap vs training-set size, several seeds
  lm_small_data   the LM at small N; lm_finetune: fine-tuning at small N
  cnn_small_data  the CNN at small N
  regime_map      where MiMuon helps: every study's paired difference vs N
  qwen3_0_6b      the full Qwen3-0.6B shapes trained with mimuon() on the CPU
  spectra         singular-value spectra and min gaps of real momenta
  gate_scaling    which gap statistic is size-free (random matrices, k=16..1024)
  gap_every       the gate computed every k steps, or lagged, vs every step

The shared harness is `experiments.harness` (flags, data, optimizers, the
training loop, diagnostics, reports, plots, several processes); it never
imports a study, and studies import each other without cycles
(`tests/test_experiments_layout.py`).
"""
