"""The model hub: MLflow only, no Ray; shared by the tuning service and the endpoint.

:mod:`tune.hub.store` (where the store is, a client), :mod:`tune.hub.fetch` (a registered
model back on disk: the model store ``singr`` finds by entry point), :mod:`tune.hub.publish`
(registration, exports and the promotion rule), :mod:`tune.hub.card` (the model card),
:mod:`tune.hub.pyfunc` (the MLflow pyfunc) and :mod:`tune.hub.ui_link` (the MLflow UI's
link to a sweep's trials). ``serve`` imports this package, never the sweep;
importing it loads no Ray module (tests/test_layering.py).
"""
