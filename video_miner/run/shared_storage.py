"""Work files on storage every Ray node reaches, given as any fsspec URL (``s3://bucket/run``).

Stages write their files under an output folder (``work/videos/<id>``, ``work/frames/<id>``). On a
cluster without a shared filesystem, each Ray worker runs the stage against a scratch copy of that
folder on its own disk: :meth:`SharedStorage.localize` fetches what the stage reads, and
:meth:`SharedStorage.publish` uploads what it wrote. Messages and registry rows always name the
driver's paths (``<output>/work/...``), so resume, status and export read them as with a shared path.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from async_pipeline import StageMessage

from ..download.remote import open_filesystem
from ..records import VideoItem


@dataclass
class SharedStorage:
    url: str
    #: The driver's output folder: what paths in messages and the registry are relative to.
    output: Path
    _fs: Any = field(default=None, init=False, repr=False, compare=False)
    _root: str = field(default="", init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # Each process opens its own filesystem (fsspec instances hold sessions and event loops).
        return {"url": self.url, "output": self.output}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.url, self.output, self._fs, self._root = state["url"], state["output"], None, ""

    def _opened(self) -> tuple[Any, str]:
        if self._fs is None:
            self._fs, self._root = open_filesystem(self.url)
        return self._fs, self._root

    @property
    def fs(self) -> Any:
        return self._opened()[0]

    def remote(self, rel: str) -> str:
        """The storage path of ``rel`` (a path relative to the output folder)."""
        return f"{self._opened()[1]}/{rel}"

    @property
    def scratch(self) -> Path:
        """This node's stand-in for the driver's output folder (one per run, by the output path)."""
        key = hashlib.sha256(f"{self.url}|{self.output}".encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / "video-miner-scratch" / key

    def relative(self, path: Path, base: Path) -> str | None:
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            return None

    # ---- on a worker -------------------------------------------------------------------------
    def localize(self, msg: StageMessage[VideoItem]) -> tuple[StageMessage[VideoItem], set[Path]]:
        """The message with its input fetched to scratch, and the files fetched. Paths outside the
        output folder (a user's own files, used in place) are left as they are."""
        if msg.input_path is None or (rel := self.relative(msg.input_path, self.output)) is None:
            return msg, set()
        local = self.scratch / rel
        remote = self.remote(rel)
        if self.fs.isdir(remote):
            local.mkdir(parents=True, exist_ok=True)
            self.fs.get(f"{remote}/", f"{local}/", recursive=True)
            fetched = {p for p in local.rglob("*") if p.is_file()}
        elif self.fs.exists(remote):
            local.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get(remote, str(local))
            fetched = {local}
        else:
            # Not uploaded (an interrupted run): the stage sees a missing input and redoes its part.
            fetched = set()
        return msg.evolve(input_path=local), fetched

    def publish(self, msg: StageMessage[VideoItem], fetched: set[Path]) -> StageMessage[VideoItem]:
        """Upload what the stage wrote under scratch (not what was fetched) and name it by the driver's path."""
        if msg.input_path is None or (rel := self.relative(msg.input_path, self.scratch)) is None:
            return msg
        local = self.scratch / rel
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        new = [p for p in files if p not in fetched]
        targets = [self.remote(p.relative_to(self.scratch).as_posix()) for p in new]
        for parent in sorted({t.rsplit("/", 1)[0] for t in targets}):
            self.fs.makedirs(parent, exist_ok=True)  # object stores: no-op; local and NFS: needed
        for path, target in zip(new, targets, strict=True):
            self.fs.put_file(str(path), target)
        item = msg.item
        video_path = self.to_driver(item.video_path) if item.video_path else None
        return msg.evolve(input_path=self.output / rel, payload=replace(item, video_path=video_path))

    def to_driver(self, path: str) -> str:
        """A scratch path as the driver names it (other paths as they are)."""
        prefix = str(self.scratch)
        return str(self.output) + path[len(prefix):] if path.startswith(prefix) else path

    def drop_scratch(self, msg: StageMessage[VideoItem]) -> None:
        """Free this node's copy of what ``msg`` names (by the driver's path or the scratch one)."""
        if msg.input_path is None:
            return
        rel = self.relative(msg.input_path, self.output) or self.relative(msg.input_path, self.scratch)
        if rel is not None:
            target = self.scratch / rel
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    # ---- on the driver -------------------------------------------------------------------------
    def remove(self, path: Path) -> None:
        """Delete the stored copy of a file under the output folder."""
        rel = self.relative(path, self.output)
        if rel is not None and self.fs.exists(self.remote(rel)):
            self.fs.rm(self.remote(rel))

    def fetch_to_driver(self, path: Path, wanted: Callable[[Path], list[str]], index: str) -> None:
        """Bring a folder the workers published into the driver's output, then free the storage:
        first its ``index`` file, then the files ``wanted`` names once the index is here."""
        rel = self.relative(path, self.output)
        if rel is None:
            return
        remote = self.remote(rel)
        path.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(f"{remote}/{index}", str(path / index))
        names = wanted(path)
        if names:
            self.fs.get([f"{remote}/{n}" for n in names], [str(path / n) for n in names])
        self.fs.rm(remote, recursive=True)
