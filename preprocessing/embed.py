"""Large-scale embedding extraction entry point, torchrun compatible.

One process::

    python -m preprocessing.embed --manifest manifest.csv --out store --torchvision-weights vit_b_16.pth

All GPUs of a node (each rank encodes its share of the scans; rank 0 merges the shards into the store)::

    torchrun --nproc_per_node 8 -m preprocessing.embed --manifest manifest.csv --out store ...

Several nodes: the usual ``torchrun --nnodes N --node_rank R --rdzv_endpoint HOST:PORT ...`` on each node, with
``--out`` on a file system shared by all nodes. The options are those of ``monai-ng embed`` (see
``monai_ng.embed_cli``); re-running the same command resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from monai_ng import embed_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` like ``monai-ng embed`` and run the extraction."""
    parser = argparse.ArgumentParser(prog="python -m preprocessing.embed", description=__doc__.splitlines()[0])
    embed_cli.configure_parser(parser)
    return embed_cli.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
