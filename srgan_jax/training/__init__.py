"""Training: config rules, train steps, the loop, checkpoints and the workdir lock."""
