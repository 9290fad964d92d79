"""Catalog benchmark: cold load, idle rescan, and save-to-visible delay with the watcher.

Run: .venv/bin/python bench/catalog.py [--types 1000] [--files 20] [--edits 30]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import structlog

from blanket.server.catalog import Catalog

TYPE_TOML = """\
description = "benchmark type {index}"
command = "process {{{{ INPUT }}}} --level {{{{ LEVEL }}}}"
tags = ["bench"]
timeout = "10m"
estimate = "30s"

[environment.defaults]
LEVEL = "{index}"

[environment.required]
INPUT = "the file to process"

[[files]]
src = "assets-{index}/"
dest = "assets"
exclude = ["*.bak"]
"""


def build_config(config: Path, types: int, files: int) -> None:
    """Write `types` type files, each selecting `files` asset files of its own."""
    folder = config / "types"
    folder.mkdir(parents=True)
    for index in range(types):
        (folder / f"type{index:04d}.toml").write_text(TYPE_TOML.format(index=index))
        assets = folder / f"assets-{index}"
        (assets / "sub").mkdir(parents=True)
        for number in range(files):
            where = assets / "sub" if number % 4 == 0 else assets
            (where / f"file{number:02d}.txt").write_text(f"asset {number} of type {index}\n" * 40)


def edit_delays(catalog: Catalog, config: Path, edits: int) -> list[float]:
    """Seconds from saving an edit to `Catalog.get` returning the new version, per edit."""
    changed = threading.Event()
    catalog.add_listener(changed.set)
    delays = []
    for edit in range(edits):
        name = f"type{edit:04d}"
        before = catalog.get(name).version
        path = config / "types" / f"{name}.toml"
        text = path.read_text() + f"# edit {edit}\n"
        changed.clear()
        saved = time.perf_counter()
        path.write_text(text)
        deadline = saved + 5
        while catalog.get(name).version == before and time.perf_counter() < deadline:
            changed.wait(deadline - time.perf_counter())
            changed.clear()
        delays.append(time.perf_counter() - saved)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--types", type=int, default=1000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=None, help="where to make the temp dir")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="blanket-bench-", dir=args.dir) as temp:
        config, versions = Path(temp) / "conf.d", Path(temp) / "versions"
        build_config(config, args.types, args.files)
        time.sleep(0.1)  # let the new files age past the racy-timestamp window
        catalog = Catalog(config, versions)
        started = time.perf_counter()
        catalog.scan()
        cold = time.perf_counter() - started
        started = time.perf_counter()
        changed = catalog.scan()
        idle = time.perf_counter() - started
        size = f"{args.types} types x {args.files} files"
        print(f"catalog cold load ({size}): {cold:.2f} s (target < 2 s)")
        print(f"catalog rescan, nothing changed ({size}): {idle:.3f} s (target < 0.2 s)"
              f"{'  [reported a change!]' if changed else ''}")
        print(f"bundles written: {len(os.listdir(versions))}")
        catalog.start_watching()
        try:
            delays = edit_delays(catalog, config, args.edits)
        finally:
            catalog.stop_watching()
        p50 = statistics.median(delays)
        p95 = statistics.quantiles(delays, n=20)[18] if len(delays) >= 2 else delays[0]
        print(f"save-to-visible delay with watcher ({len(delays)} edits): "
              f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms (target p95 < 1 s)")


if __name__ == "__main__":
    main()
