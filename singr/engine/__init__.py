"""Training, inference and evaluation engine (plain PyTorch + MONAI; no Ray, no MLflow):
``pipeline`` (cases, split, preprocessing), ``trainer`` (the Trainer and its hooks),
``infer`` (the one Predictor), ``evaluate``, ``checkpoint`` (safetensors)."""
