"""What lies above the core, found by entry point, never by import.

The groups (declared in pyproject.toml): ``singr.commands`` (service subcommands of ``singr``),
``singr.model_stores`` (downloaders of ``models:/`` and ``runs:/`` sources) and
``singr.config_schemas`` (the schema of a whole service config). Entry points live in the
installed distribution's metadata: a source checkout put on ``PYTHONPATH`` without
``pip install -e .`` has the packages but none of them, and :func:`missing` says so instead of
blaming a missing extra.
"""
from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from importlib.util import find_spec

__all__ = ["plugins", "missing"]


def plugins(group: str) -> list[EntryPoint]:
    """The entry points of ``group`` in the installed distributions, sorted by name."""
    return sorted(entry_points(group=group), key=lambda e: e.name)


def missing(what: str, package: str, extra: str) -> str:
    """Why ``what`` (provided by the top-level ``package`` of the ``extra``) is not there: the
    extra is not installed, or the package is importable but the distribution's entry points
    are not (a checkout used without installing it)."""
    if find_spec(package) is not None:
        return (f"{what} is not registered: the {package!r} package is importable, but the singr distribution's "
                "entry points are not installed (run `pip install -e .` in the checkout, or `bash scripts/setup.sh`)")
    return f"{what} needs the {extra} extra (pip install 'singr[{extra}]')"
