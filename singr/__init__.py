"""SiNGR: brain-tumour segmentation by regression of Signed Normalized Geodesic maps.

Public API (DESIGN.md 1): :func:`sing_map`, :func:`sing_maps`, the losses
(:class:`FocalL1Loss` and the paper's ablations), and the errors. ``singr`` never imports Ray.
"""
from .errors import SingrConfigError, SingrInputError
from .losses import (DiceBCELoss, FocalL1DaggerLoss, FocalL1Loss, L1Loss, L2Loss, ProductLoss, build_loss,
                     is_regression_loss)
from .sing import compute_distances, sing_from_distances, sing_map, sing_maps

__version__ = "0.1.0"
__all__ = ["sing_map", "sing_maps", "compute_distances", "sing_from_distances", "FocalL1Loss", "FocalL1DaggerLoss",
           "L1Loss", "L2Loss", "ProductLoss", "DiceBCELoss", "build_loss", "is_regression_loss",
           "SingrInputError", "SingrConfigError", "__version__"]
