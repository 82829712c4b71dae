"""The weights cache: where model files live, how they are fetched and verified.

One folder holds every file, under its release file name. Precedence for the folder:
``--weights-dir`` / ``weights_dir`` in the config, then ``VIDRESTORE_WEIGHTS``, then
the platform's user cache (``~/.cache/vidrestore/weights`` on Linux).

A download goes to a hidden temp file in that folder, is hashed as it streams, and is
renamed into place only when its SHA-256 matches the registry. Whatever goes wrong
(network, checksum, Ctrl-C) the temp file is removed and the final name is untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import platformdirs

from vidrestore.errors import ModelError
from vidrestore.models.registry import DEFAULT_REGISTRY, ModelRegistry, ModelSpec

__all__ = ["ModelStatus", "ModelStore", "default_weights_dir", "known_sha256", "sha256_file"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]
"""Called as ``progress(bytes_so_far, total_bytes_or_None)`` while downloading."""

_CHUNK = 1 << 20


def default_weights_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The weights folder: ``override``, else ``$VIDRESTORE_WEIGHTS``, else the user cache."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("VIDRESTORE_WEIGHTS")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("vidrestore")) / "weights"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _stamped_sha256(path: Path) -> str | None:
    """The sha256 a verified stamp beside ``path`` records, if the stamp is for the file as it is now
    (same size and modification time); None when there is no such stamp."""
    stat = path.stat()
    try:
        stamp = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no stamp yet, or an unreadable one
    if not isinstance(stamp, dict) or (stamp.get("size"), stamp.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
        return None
    sha = stamp.get("sha256")
    return sha if isinstance(sha, str) else None


def known_sha256(path: Path) -> str:
    """``path``'s sha256: the one its verified stamp records when the cache checked the file as it is
    now (so a registered model is not hashed again), else hashed here."""
    return _stamped_sha256(path) or sha256_file(path)


def offline_requested() -> bool:
    """``VIDRESTORE_OFFLINE`` set (to anything but 0): never download."""
    return os.environ.get("VIDRESTORE_OFFLINE", "") not in ("", "0")


@dataclass(frozen=True)
class ModelStatus:
    """What ``models list`` shows for one model."""

    spec: ModelSpec
    path: Path
    present: bool
    size_bytes: int | None


class ModelStore:
    """Find, fetch and verify model files in one folder."""

    def __init__(
        self,
        root: Path,
        registry: ModelRegistry = DEFAULT_REGISTRY,
        *,
        fetch_missing: bool = False,
        progress: Callable[[str], ProgressCallback | None] | None = None,
    ) -> None:
        """``fetch_missing``: :meth:`resolve` downloads (and verifies) a missing registry model on first
        use, as torch.hub does; ``progress(name)`` gives the download's progress callback."""
        self.root = root
        self.registry = registry
        self.fetch_missing = fetch_missing
        self.progress = progress

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.registry[name]
        except KeyError:
            known = ", ".join(self.registry)
            raise ModelError(f"unknown model {name!r}; known models: {known}") from None

    def path(self, name: str) -> Path:
        return self.root / self.spec(name).filename

    def status(self, name: str) -> ModelStatus:
        path = self.path(name)
        present = path.is_file()
        return ModelStatus(self.spec(name), path, present, path.stat().st_size if present else None)

    def _missing_message(self, spec: ModelSpec, path: Path, key: str) -> str:
        if spec.sha256 is None:
            return (
                f"model {spec.name} is not in {self.root} and has no confirmed checksum to fetch it by; "
                f"download {spec.url} yourself and set {key}=PATH"
            )
        return (
            f"model {spec.name} is missing: run 'vidrestore models fetch {spec.name}', "
            f"or download {spec.url} and save it as {path}, or load a file of your own as it is: --set {key}=PATH"
        )

    def resolve(self, name: str, local: str | None = None, key: str = "weights") -> Path:
        """The file to load for ``name``: ``local`` as-is if given, else the verified cache file.

        A missing registry model is fetched first when ``fetch_missing`` is on. Raises ModelError
        (exit 3) with the URL, the target path and the ``models fetch`` command when it is missing
        (or its download fails), and when a cached file does not match its checksum.
        """
        if local:
            path = Path(local).expanduser()
            if not path.is_file():
                raise ModelError(f"{key}: weights file {path} does not exist")
            return path
        spec = self.spec(name)
        path = self.root / spec.filename
        if not path.is_file():
            if not self.fetch_missing or spec.sha256 is None:
                raise ModelError(self._missing_message(spec, path, key))
            log.info("fetching %s (~%.0f MB) on first use from %s", spec.name, spec.size_mb, spec.url)
            try:
                return self.fetch(name, self.progress(name) if self.progress else None)
            except ModelError as exc:
                raise ModelError(
                    f"{exc}; to fetch it later: vidrestore models fetch {spec.name}; "
                    f"to load a file of your own as it is: --set {key}=PATH"
                ) from exc
        self._verify_cached(spec, path, key)
        return path

    def _verify_cached(self, spec: ModelSpec, path: Path, key: str = "weights") -> None:
        """Check a cached file's checksum, once per (size, mtime) thanks to a small sidecar."""
        if spec.sha256 is None:
            return
        if _stamped_sha256(path) == spec.sha256:
            return
        stat = path.stat()
        stamp = {"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        sidecar = _stamp_path(path)
        actual = sha256_file(path)
        if actual != spec.sha256:
            raise ModelError(
                f"{path} does not match the checksum of {spec.name} (sha256 {actual[:12]}..., "
                f"expected {spec.sha256[:12]}...); delete it and run 'vidrestore models fetch {spec.name}', "
                f"or, if it is your own file, load it as it is (no checksum): --set {key}=PATH"
            )
        try:
            sidecar.write_text(json.dumps(stamp), encoding="utf-8")
        except OSError as exc:
            log.debug("could not write %s: %s", sidecar, exc)

    def fetch(self, name: str, progress: ProgressCallback | None = None, force: bool = False) -> Path:
        """Download ``name`` into the cache, verify it, rename it into place; return its path."""
        spec = self.spec(name)
        target = self.root / spec.filename
        if spec.sha256 is None:
            raise ModelError(self._missing_message(spec, target, f"{spec.role}.weights"))
        if target.is_file() and not force:
            self._verify_cached(spec, target)
            return target
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(f"cannot create the weights folder {self.root}: {exc.strerror}") from exc
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=self.root)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                actual = self._download(spec, out, progress, target)
            if actual != spec.sha256:
                raise ModelError(
                    f"download of {spec.name} from {spec.url} failed verification (sha256 {actual[:12]}..., "
                    f"expected {spec.sha256[:12]}...); nothing was installed at {target}"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("fetched %s to %s", spec.name, target)
        return target

    @staticmethod
    def _download(spec: ModelSpec, out: BinaryIO, progress: ProgressCallback | None, target: Path) -> str:
        digest = hashlib.sha256()
        write = out.write
        try:
            with urllib.request.urlopen(spec.url, timeout=60) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                done = 0
                while chunk := resp.read(_CHUNK):
                    digest.update(chunk)
                    write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ModelError(
                f"cannot download {spec.name} from {spec.url} ({reason}); download it yourself and save it as {target}"
            ) from exc
        if total is not None and done != total:
            raise ModelError(
                f"download of {spec.name} from {spec.url} stopped at {done} of {total} bytes; "
                f"nothing was installed at {target}"
            )
        return digest.hexdigest()
