"""``python -m pyro_svae.data [--data-dir DIR] [NAME ...]``: load, print sizes and times."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from .datasets import load_splits
from .errors import DatasetCorruptError, DatasetNotFoundError
from .registry import DATASETS
from .root import add_data_dir_argument, resolve_data_root


def main(argv: Sequence[str] | None = None) -> int:
    """Load each named dataset (all by default); print split sizes, load time, epoch time."""
    parser = argparse.ArgumentParser(prog="python -m pyro_svae.data", description=main.__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"datasets to load (default: all): {', '.join(DATASETS)}",
    )
    add_data_dir_argument(parser)
    parser.add_argument("--no-download", action="store_true", help="never try the network")
    parser.add_argument("--batch-size", type=int, default=100, help="batch size of the timed epoch")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s): {', '.join(unknown)}")
    print(f"data root: {resolve_data_root(args.data_dir)}")
    failed = 0
    for name in args.names or DATASETS:
        start = time.perf_counter()
        try:
            splits = load_splits(name, root=args.data_dir, download=not args.no_download)
        except (DatasetNotFoundError, DatasetCorruptError) as err:
            failed += 1
            print(f"{name}: {type(err).__name__}\n{err}")
            continue
        loaded = time.perf_counter() - start
        train = splits["train"]
        start = time.perf_counter()
        for _ in train.batches(args.batch_size, generator=torch.Generator().manual_seed(0)):
            pass
        epoch = time.perf_counter() - start
        sizes = "/".join(str(len(d)) for d in splits.values())
        print(
            f"{name}: {sizes} (train/valid/test), {train!r}\n"
            f"  load {loaded:.2f} s, one train epoch at batch {args.batch_size}: {epoch:.3f} s"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
