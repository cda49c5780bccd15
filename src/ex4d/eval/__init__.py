"""Evaluation: geometric mask metrics against ground truth, image/video metrics and the ``ex4d eval`` harness."""
