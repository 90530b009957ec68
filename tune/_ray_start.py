"""``ray start`` for a joining node that listens on 127.0.0.1 only (used by :mod:`tune.devcluster`).

Ray's command line refuses to join a node unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``, and
with that variable set its servers (GCS, raylet, agents) listen on every interface and the
node advertises the machine's address instead of 127.0.0.1 (``resolve_ip_for_localhost``).
Here the variable stays 0 in the environment the node's processes inherit, so they listen
on loopback, and only this command-line process is told that a joining node is allowed and
that 127.0.0.1 is the node's address (:func:`tune.raycompat.allow_loopback_join`). For several
nodes on one machine only; a real cluster's nodes use ``ray start`` as it is.
"""
from __future__ import annotations

import sys

from .raycompat import allow_loopback_join, ray_cli


def main(argv: list[str]) -> None:
    allow_loopback_join()
    ray_cli(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
