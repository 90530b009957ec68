"""SiNGR distributed tuning service on Ray (issue #3).

Stages: Ray Data SiNG map cache (:mod:`tune.maps`) -> Ray Train per trial
(:mod:`tune.trainer`) -> Ray Tune + Optuna + ASHA search (:mod:`tune.sweep`) -> MLflow
tracking and model registry (:mod:`tune.tracking`). Entry point: ``python -m tune``.
``singr`` never imports this package at import time.
"""
