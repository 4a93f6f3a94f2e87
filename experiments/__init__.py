"""Experiments for mimuon_optax: training scripts, sweeps and measurements.

Each script is a module, run from the repository root as
`python -m experiments.<name>` (`--help` lists its flags), with a dataclass
config:

  data_text     Shakespeare plays -> cached token arrays -> (B, T+1) windows
  data_images   Fashion-MNIST (IDX files) and sklearn digits
  train_lm      Qwen3-architecture LM on Shakespeare (AdamW / Muon / MiMuon)
  train_vision  small CNN (or MLP) on Fashion-MNIST / digits
  tau_sweep     Muon vs MiMuon across tau: lr on validation, seeds on test
  gen_gap       generalization gap vs training-set size, several seeds
  qwen3_0_6b    the full Qwen3-0.6B shapes trained with mimuon() on the CPU
  spectra       singular-value spectra and min gaps of real momenta
  gate_scaling  which gap statistic is size-free (random matrices, k=16..1024)
  compare       the three optimizers on one task -> markdown table + plot
  launch        N local processes of a multi-process run (pod rehearsal)

and the modules they share: cli (flags from a config dataclass), optimizers
(the three optimizers and their learning rates), loop (the training loop),
diagnostics (per-matrix MiMuon logs), reporting (jsonl, JSON, markdown,
COMMAND.md), plots, distributed (several processes), spectra_analysis and
spectra_plots (spectra's analysis and plot), tau_sweep_report (tau_sweep's
tables and plots).
"""
