"""The shipped YAML configs, installed as the package data ``singr.configs``.

``brats.yaml`` is the reference: every key the code reads, with the paper's defaults;
every other file names a base and overrides only what differs.
"""
