"""Model definitions used to exercise the optimizers (Flax NNX)."""
