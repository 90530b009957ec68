"""The SiNG transform: its definition (:mod:`.definition`), the distance engines
(:mod:`.engines`, :mod:`.raster`, compiled kernels in :mod:`._kernels`) and the on-disk
distance cache (:mod:`.cache`). Arrows point one way: definition <- engines <- cache."""
from .cache import DistanceCache, SingSettings, mask_digest
from .definition import (
                         BOUNDARY_MODES,
                         Distances,
                         boundary,
                         canny2d_boundary,
                         distances_from_maps,
                         inner_boundary,
                         sing_from_distances,
)
from .engines import ENGINES, compute_distances, geodesic_distance, map_regions, sing_map, sing_maps

__all__ = ["DistanceCache", "SingSettings", "mask_digest", "BOUNDARY_MODES", "Distances", "boundary",
           "canny2d_boundary", "distances_from_maps", "inner_boundary", "sing_from_distances", "ENGINES",
           "compute_distances", "geodesic_distance", "map_regions", "sing_map", "sing_maps"]
