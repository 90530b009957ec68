"""The MLflow pyfunc of a singr model (one checkpoint or an ensemble bundle).

The model's artifact ``model`` is a singr model folder (``singr-model.json`` and its
``*.safetensors`` members; :mod:`singr.engine.bundle`). ``predict`` takes an
*un-normalised* image (C, D, H, W) as a numpy array, or a list of them, and returns the
label map(s) in the training data's convention (the same Predictor as everywhere else).
"""
from __future__ import annotations

from mlflow.pyfunc import PythonModel


class SingrModel(PythonModel):
    def load_context(self, context):  # noqa: ANN001 (no type hints: MLflow would read them as a schema)
        from singr.engine.bundle import load_predictor

        self.predictor = load_predictor(context.artifacts["model"], device="auto")

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        import numpy as np

        images = model_input if isinstance(model_input, list) else [model_input]
        out = [p.labels for p in self.predictor.predict_batch([np.asarray(im, dtype=np.float32) for im in images])]
        return out if isinstance(model_input, list) else out[0]
