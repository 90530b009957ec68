"""The SiNGR tuning service on Ray: ``python -m tune`` (or ``singr tune``).

Stages: SiNG map cache with Ray Data (:mod:`tune.maps`) -> one training run per trial, in the
trial's own process or as a Ray Train run (:mod:`tune.trainer`, ``tune.trial_runner``) -> Ray
Tune + Optuna + ASHA search, or a comparison grid (:mod:`tune.search`, :mod:`tune.grid`) ->
MLflow tracking (:mod:`tune.tracking`), the registry and its champion (:mod:`tune.publish`), and the comparison report
(:mod:`tune.report`). :mod:`tune.sweep` runs them in order; :mod:`tune.session` owns the
sweep's Ray; :mod:`tune.config` types the ``tune``, ``experiment`` and ``mlflow`` sections.
The ``singr`` package never imports this one at import time.
"""
