"""Training: simulated-mask training pairs from monocular videos (``ex4d prepare``, spec §9.2) and the trainer."""
