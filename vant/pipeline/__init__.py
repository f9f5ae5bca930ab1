"""One run: the file store, the training loop (``fit``), the noisy sweep and the run directory."""
