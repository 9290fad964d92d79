"""The files a worker fetches before it runs a task: its type version's bundle (cached per
hash) and the inputs uploaded with it."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from blanket.config.bundles import UnsafeBundle, extract_bundle
from blanket.models import Task
from blanket.worker.client import WorkerClient

_HASH = re.compile(r"[0-9a-f]{16,64}")


class BundleCache:
    """Type version bundles, fetched once per hash and extracted under `root/HASH/`."""

    def __init__(self, server: WorkerClient, root: Path):
        self.server = server
        self.root = root

    def cached(self, version: str) -> bool:
        """Whether the bundle of `version` is here already (no download)."""
        return bool(_HASH.fullmatch(version)) and (self.root / version).is_dir()

    def get(self, version: str, url_path: str) -> Path:
        """The extracted bundle of `version`, fetching and unpacking it if needed."""
        if not _HASH.fullmatch(version):
            raise UnsafeBundle(f"version {version!r} is not a hash")
        target = self.root / version
        if target.is_dir():
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        archive = self.root / f"{version}.tar.gz"
        if not archive.is_file():
            partial = self.root / f".{version}.{uuid.uuid4().hex}.part"
            try:
                self.server.fetch_bundle(url_path, str(partial))
                os.replace(partial, archive)
            finally:
                partial.unlink(missing_ok=True)
        # Unpack beside the target and rename, so no worker ever sees half a bundle.
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{version}."))
        try:
            extract_bundle(archive, staging)
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def fetch_inputs(server: WorkerClient, task: Task, work_dir: Path) -> None:
    """Download uploaded files a remote worker does not have (a local one shares them)."""
    for name in task.inputs:
        if "/" in name or name in ("", ".", ".."):
            raise UnsafeBundle(f"input name {name!r} is not a plain file name")
        target = work_dir / name
        if target.exists():
            continue
        work_dir.mkdir(parents=True, exist_ok=True)
        partial = work_dir / f".{name}.part"
        server.fetch_input(task.id, name, str(partial))
        os.replace(partial, target)
