"""Offline fill of the "must be generated" pixels without learned weights (background plate, neighbour
reprojection, background-biased inpainting)."""

from ex4d.fill.background import fill_from_background, static_background
from ex4d.fill.inpaint import inpaint, inpaint_background
from ex4d.fill.offline import fill_from_neighbours, fill_sources, neighbour_offsets, offline_fill

__all__ = ["fill_from_background", "fill_from_neighbours", "fill_sources", "inpaint", "inpaint_background",
           "neighbour_offsets", "offline_fill", "static_background"]
