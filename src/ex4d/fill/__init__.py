"""Offline fill of the "must be generated" pixels without learned weights (neighbour reprojection + inpainting)."""

from ex4d.fill.inpaint import inpaint
from ex4d.fill.offline import fill_from_neighbours, neighbour_offsets, offline_fill

__all__ = ["fill_from_neighbours", "inpaint", "neighbour_offsets", "offline_fill"]
