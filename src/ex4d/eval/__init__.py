"""Evaluation: geometric mask metrics against ground truth (and, later, image/video metrics)."""
