"""Command line: ``python -m lmbook data list | fetch [NAMES] [--to DIR] | verify [DIR] [--partial]`` and
``python -m lmbook train-distributed --processes 2 [--steps N ...]`` (Chapter 11),
``python -m lmbook doctor [--json]`` (is this machine ready?) and
``python -m lmbook bundle DIR`` (wheels, data and notebooks for a room without internet).

For workshops: fetch every data set once on a machine with internet access,
copy the folder around, verify it, and point ``LMBOOK_DATA_DIR`` at it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmbook.data import datasets as ds


def _cmd_list(args: argparse.Namespace) -> int:
    try:
        offline = ds.offline_dir()
    except ds.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'file':50s} {'size':>10s}  {'where':8s} licence")
    for entry in ds.REGISTRY.values():
        where = "missing"
        if offline is not None and (offline / entry.name).exists():
            where = "offline"
        elif (ds.cache_dir() / entry.name).exists():
            where = "cached"
        print(f"{entry.name:50s} {entry.size:>10,d}  {where:8s} {entry.licence}")
    print(f"\noffline dir (${ds.ENV_OFFLINE}): {offline or 'not set'}\ncache: {ds.cache_dir()}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    try:
        entries = ds.files_of(args.names)
    except ds.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = 0
    for entry in entries:
        try:
            dest = ds.fetch(entry, to=args.to, progress=not args.quiet)
            print(f"ok       {entry.name} -> {dest}")
        except ds.DataError as err:
            failed += 1
            print(f"FAILED   {entry.name}: {err}", file=sys.stderr)
    if failed:
        print(
            f"{failed} file(s) could not be fetched. Without internet access, copy a verified data "
            f"folder and set {ds.ENV_OFFLINE} to it.",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        root = args.dir or ds.offline_dir() or ds.cache_dir()
    except ds.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    fetch_hint = f"run `{ds.FETCH_COMMAND} --to {root}` first (on a machine with internet access)"
    if not root.is_dir():
        print(f"error: {root} is not a folder: nothing was fetched there yet; {fetch_hint}", file=sys.stderr)
        return 2
    good, bad, missing = ds.verify_dir(root)
    for name in good:
        print(f"ok       {name}")
    for name in bad:
        print(f"CORRUPT  {root / name} (sha256 does not match the registry)")
    for name in missing:
        print(f"missing  {name}")
    print(f"{len(good)} ok, {len(bad)} corrupt, {len(missing)} missing in {root}")
    if not good and not bad:
        print(f"error: no data file of the registry found there; {fetch_hint}", file=sys.stderr)
        return 1
    if bad:
        return 1
    if missing and not args.partial:
        print(f"error: {len(missing)} file(s) missing; fetch them with `{ds.FETCH_COMMAND} --to {root}` "
              "(or pass --partial to accept a copy of some data sets only)", file=sys.stderr)
        return 1
    return 0


def _cmd_train_distributed(args: argparse.Namespace) -> int:
    import json

    from lmbook.train import distributed

    sizes = ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--context", str(args.context),
             "--n-layers", str(args.n_layers), "--d-model", str(args.d_model)]
    if args.process_id is None:  # the launcher: start the workers on this machine
        losses = distributed.launch(args.processes, sizes)
        print("LOSSES " + json.dumps(losses))
        return 0
    distributed.initialize(args.coordinator, args.processes, args.process_id)
    losses = distributed.train_worker(steps=args.steps, batch_size=args.batch_size, context=args.context,
                                      n_layers=args.n_layers, d_model=args.d_model)
    if args.process_id == 0:
        print("LOSSES " + json.dumps(losses))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from lmbook import doctor

    return doctor.main(as_json=args.json, seconds=args.seconds)


def _cmd_bundle(args: argparse.Namespace) -> int:
    from lmbook import bundle

    return bundle.main(args.dir, platform=args.platform, python_version=args.python_version,
                       chapter_libraries=not args.minimal, pin=args.pin)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lmbook", description="lmbook command line")
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="list, fetch and verify the book's data sets")
    dsub = data.add_subparsers(dest="action", required=True)
    dsub.add_parser("list", help="every file of the registry and where it is found").set_defaults(func=_cmd_list)
    fetch = dsub.add_parser("fetch", help="download, verify and cache data sets (all by default)")
    fetch.add_argument("names", nargs="*", help="data sets (e.g. tinyshakespeare, multi30k) or file names")
    fetch.add_argument("--to", type=Path, default=None, help="target folder (default: the cache)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bars")
    fetch.set_defaults(func=_cmd_fetch)
    verify = dsub.add_parser("verify", help="check every registry file found in a folder")
    verify.add_argument("dir", nargs="?", type=Path, default=None, help=f"folder (default: ${ds.ENV_OFFLINE} or the cache)")
    verify.add_argument("--partial", action="store_true", help="succeed when files are missing (corrupt ones still fail)")
    verify.set_defaults(func=_cmd_verify)
    dist = sub.add_parser("train-distributed", help="train a character GPT with several processes (jax.distributed)")
    dist.add_argument("--processes", type=int, default=2, help="number of processes (default 2)")
    dist.add_argument("--process-id", type=int, default=None, help="set by the launcher for each worker")
    dist.add_argument("--coordinator", default=None, help="host:port of process 0 (set by the launcher)")
    dist.add_argument("--steps", type=int, default=5)
    dist.add_argument("--batch-size", type=int, default=8, help="global batch size (split over processes)")
    dist.add_argument("--context", type=int, default=32)
    dist.add_argument("--n-layers", type=int, default=2)
    dist.add_argument("--d-model", type=int, default=64)
    dist.set_defaults(func=_cmd_train_distributed)
    doctor = sub.add_parser("doctor", help="check Python, packages, devices, data, disk, memory and speed")
    doctor.add_argument("--json", action="store_true", help="a machine-readable report")
    doctor.add_argument("--seconds", type=float, default=5.0, help="length of the matmul speed test (default 5)")
    doctor.set_defaults(func=_cmd_doctor)
    bundle = sub.add_parser("bundle", help="write wheels, verified data and notebooks for an offline workshop")
    bundle.add_argument("dir", type=Path, help="the bundle's folder (created)")
    bundle.add_argument("--platform", default=None, choices=["linux-x86_64", "linux-aarch64", "macos-arm64",
                                                             "macos-x86_64", "windows-amd64"],
                        help="target platform (default: this machine; another one needs uv: pip install uv)")
    bundle.add_argument("--python-version", default=None, help="target Python, e.g. 3.12 (default: this one)")
    bundle.add_argument("--minimal", action="store_true",
                        help="lmbook and its dependencies only (no Jupyter, no chapter 8/10/12 libraries)")
    bundle.add_argument("--pin", action="store_true",
                        help="lmbook's dependencies at the versions installed here (default: the newest that fit)")
    bundle.set_defaults(func=_cmd_bundle)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
