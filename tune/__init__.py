"""The SiNGR tuning service on Ray: ``python -m tune`` (or ``singr tune``).

Stages: SiNG map cache with Ray Data (:mod:`tune.maps`) -> one training run per trial, in the
trial's own process or as a Ray Train run (:mod:`tune.trainer`, ``tune.trial_runner``) -> Ray
Tune + Optuna + ASHA search, or a comparison grid (:mod:`tune.search`, :mod:`tune.grid`) ->
MLflow tracking of the trials (:mod:`tune.tracking`) -> the best model's card
(:mod:`tune.champion`) registered and promoted through the model hub (:mod:`tune.hub`: MLflow
only, no Ray; the endpoint shares it), and the comparison report (:mod:`tune.report`).
:mod:`tune.sweep` runs them in order; :mod:`tune.session` owns the sweep's Ray;
:mod:`tune.nodes` and :mod:`tune.raycompat` hold what touches Ray's nodes and internals;
:mod:`tune.tidy` closes the MLflow runs of a driver killed outright and stops its Ray's leftovers;
:mod:`tune.config` types the ``tune``, ``experiment`` and ``mlflow`` sections;
:mod:`tune.commands` plugs ``singr tune`` and ``singr report`` into the ``singr`` command.
:mod:`tune.devcluster` starts local multi-node clusters for tests, scripts and benchmarks;
no production module imports it. The ``singr`` package never imports this one.
"""
