"""The harness the studies share: flags, data, optimizers, the training loop,
diagnostics, reports and plots. Nothing here imports a study
(`tests/test_experiments_layout.py` checks it).

  cli           flags from a config dataclass, and `study_main` (parse,
                check --out, run, print where the results are)
  data_text     Shakespeare plays -> cached token arrays -> (B, T+1) windows
  data_images   Fashion-MNIST (IDX files) and sklearn digits
  optimizers    the three optimizers and their learning rates
  loop          the training loop (checkpoints, evaluation, logs)
  diagnostics   per-matrix MiMuon logs
  distributed   several processes (jax.distributed)
  launch        N local processes of a multi-process run (pod rehearsal)
  reporting     jsonl, JSON, markdown tables, COMMAND.md
  plots         curve styles and saving figures
  tau_sweep_report  a tau_sweep run's tables, plots and files (reads results)
  spectra_analysis, spectra_plots   the spectra study's analysis and plot
"""
