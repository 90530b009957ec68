"""Training, inference and evaluation engine (plain PyTorch + MONAI; no Ray)."""
