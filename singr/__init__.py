"""SiNGR: brain-tumour segmentation by regression of Signed Normalized Geodesic maps.

Public API: :func:`sing_map` / :func:`sing_maps` (the transform), :func:`normalize_image`
(the z-scoring the transform expects), the losses (:class:`FocalL1Loss` and the paper's
ablations) and the errors. ``singr`` is the method and its engine: it imports neither Ray
nor MLflow (the service layers ``tune`` and ``serve`` build on it).
"""
from importlib.metadata import PackageNotFoundError, version

from . import preprocess
from .errors import SingrConfigError, SingrInputError
from .losses import (
    DiceBCELoss,
    FocalL1DaggerLoss,
    FocalL1Loss,
    L1Loss,
    L2Loss,
    ProductLoss,
    build_loss,
    is_regression_loss,
)
from .preprocess import normalize_image
from .sing import compute_distances, sing_from_distances, sing_map, sing_maps

try:
    __version__ = version("singr")
except PackageNotFoundError:  # a source tree on sys.path without installed metadata
    __version__ = "0+unknown"

__all__ = ["sing_map", "sing_maps", "compute_distances", "sing_from_distances", "normalize_image", "preprocess",
           "FocalL1Loss", "FocalL1DaggerLoss", "L1Loss", "L2Loss", "ProductLoss", "DiceBCELoss", "build_loss",
           "is_regression_loss", "SingrInputError", "SingrConfigError", "__version__"]
