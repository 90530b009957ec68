"""The MLflow pyfunc wrapper of a singr checkpoint.

The model directory holds the checkpoint file ``artifacts/best.pt`` (serving finds it with
``**/*.pt``). ``predict`` takes an *un-normalised* image (C, D, H, W) as a numpy array (or
a list of them) and returns the label map(s) in the training data's convention.
"""
from __future__ import annotations

import mlflow.pyfunc


class SingrCheckpointModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):  # noqa: ANN001 (no type hints: MLflow would read them as a schema)
        from singr.engine.evaluate import Predictor

        self.predictor = Predictor(context.artifacts["checkpoint"], device="auto")

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        import numpy as np

        images = model_input if isinstance(model_input, list) else [model_input]
        out = [self.predictor.predict(np.asarray(im, dtype=np.float32)).labels for im in images]
        return out if isinstance(model_input, list) else out[0]
