"""``python -m tune.devcluster up|down|status|kill-node|env DIR`` (what ``scripts/cluster.sh`` runs)."""
import sys

from . import main

sys.exit(main())
