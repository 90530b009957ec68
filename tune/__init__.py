"""SiNGR distributed tuning service on Ray (issue #3).

Stages: Ray Data SiNG map cache (:mod:`tune.maps`) -> Ray Train per trial
(:mod:`tune.trainer`) -> Ray Tune + Optuna + ASHA search (:mod:`tune.sweep`) -> MLflow
tracking and model registry (:mod:`tune.tracking`). Entry point: ``python -m tune``.
A comparison grid (``tune.mode: grid``, :mod:`singr.experiment`) replaces the search by
Tune's grid over variants x seeds and ends with :mod:`singr.report`.
``singr`` never imports this package at import time.
"""
