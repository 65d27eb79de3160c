"""Train a benchmark feature classifier and print what goes into trilemma.features.FEATURE_NETS.

    python scripts/train_feature_net.py digits          # about 1 minute on 2 CPU cores
    python scripts/train_feature_net.py fashion-mnist   # about 10 minutes on 2 CPU cores

The file is written to src/trilemma/assets/featnet-<dataset>.safetensors (or --out); paste the
printed SHA-256 and test accuracy into FEATURE_NETS.
"""

import argparse
import json
from pathlib import Path

import torch

from trilemma.features import FEATURE_NETS, train_feature_net

ASSETS = Path(__file__).resolve().parents[1] / "src" / "trilemma" / "assets"

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(FEATURE_NETS))
    ap.add_argument("--out", type=Path, default=None, help="output file [default: the shipped asset's path]")
    ap.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's choice]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or ASSETS / FEATURE_NETS[args.dataset].file
    print(json.dumps(train_feature_net(args.dataset, out), indent=2))
