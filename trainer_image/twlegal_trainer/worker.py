"""One torchrun rank."""

import argparse
import sys

from twlegal.contracts.training import TrainingConfig

from .train import run

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    with open(args.config, encoding="utf-8") as f:
        sys.exit(run(TrainingConfig.model_validate_json(f.read())))
