"""Where models registered by singr 0.2 find their pyfunc class: MLflow pickled it as
``tune.pyfunc.SingrModel``, and ``mlflow.pyfunc.load_model`` imports that name. The class
lives in :mod:`tune.hub.pyfunc`; this module only keeps those older versions loadable."""
from .hub.pyfunc import SingrModel

__all__ = ["SingrModel"]
