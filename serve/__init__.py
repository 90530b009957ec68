"""The SiNGR HTTP endpoint on Ray Serve: :mod:`serve.app` (the deployment and its routes),
:mod:`serve.upload` (an upload turned into a checked case), :mod:`serve.model` (where the
model comes from), :mod:`serve.launch` (``singr serve``), :mod:`serve.bench` (latency)."""
