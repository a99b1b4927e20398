"""Where model weights live: find, download (resumable, verified), measure and delete them.

Search order for a :class:`WeightsSpec` (``repo_id`` "org/name"):

1. ``<user data>/models/<repo_id>`` (``app.config.models_dir()``, under ``AMC_HOME`` when set)
2. ``<dir>/<repo_id>`` for each folder in ``AMC_MODELS_PATH`` (``os.pathsep``-separated)
3. the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``), looked up offline

Downloads go to (1) with ``huggingface_hub.snapshot_download`` (honours ``HF_ENDPOINT``
or the ``endpoint`` argument), which resumes interrupted files with HTTP Range requests.
Every downloaded file is checked against the Hub's metadata (sha256 of LFS files, the git
blob id of small files) and the result recorded in ``amc-manifest.json`` in the model
folder; a folder with a manifest counts as present only when every listed file is there
at its recorded size.

Nothing here imports torch; ``huggingface_hub`` is imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app import config
from app.engine.errors import AmcError
from app.models.backends.base import WeightsSpec

MANIFEST_NAME = "amc-manifest.json"
MODELS_PATH_ENV = "AMC_MODELS_PATH"
_MARKERS = ("config.json", "model_index.json", MANIFEST_NAME)
_CHUNK_BYTES = 1 << 20

DownloadProgress = Callable[[int, int, str], None]  # (bytes_done, bytes_total, message)


class WeightsError(AmcError):
    """Weights could not be downloaded, verified or deleted; the message says why."""

    exit_code = 4


def search_roots() -> list[Path]:
    """Folders that may hold ``<repo_id>`` subfolders, in search order."""
    roots = [config.models_dir()]
    for part in os.environ.get(MODELS_PATH_ENV, "").split(os.pathsep):
        if part.strip():
            roots.append(Path(part.strip()).expanduser())
    return roots


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _folder_complete(folder: Path, spec: WeightsSpec) -> bool:
    if not folder.is_dir():
        return False
    manifest = _read_manifest(folder)
    if manifest is not None:
        files = manifest.get("files", {})
        for name, meta in files.items():
            p = folder / name
            if not p.is_file() or p.stat().st_size != int(meta.get("size", -1)):
                return False
        return all(f in files or (folder / f).is_file() for f in spec.files)
    if spec.files:
        return all((folder / f).is_file() for f in spec.files)
    return any((folder / m).is_file() for m in _MARKERS)


def hf_cache_dir() -> str | None:
    """The Hugging Face hub cache, read from the environment now (the hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # the hub's default (~/.cache/huggingface/hub)


def _hf_cache_folder(spec: WeightsSpec) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    names = spec.files or ("config.json", "model_index.json")
    root: Path | None = None
    for name in names:
        try:
            hit = try_to_load_from_cache(spec.repo_id, name, cache_dir=hf_cache_dir(), revision=spec.revision)
        except Exception:  # a malformed cache must not break a status listing
            return None
        if not isinstance(hit, str):
            if spec.files:
                return None  # one required file missing
            continue
        snapshot = Path(hit)
        for _ in Path(name).parts:
            snapshot = snapshot.parent
        root = snapshot
        if not spec.files:
            break
    return root


def find_weights(spec: WeightsSpec) -> Path | None:
    """The local folder holding ``spec``'s files, or None; never touches the network."""
    for root in search_roots():
        folder = root / spec.repo_id
        if _folder_complete(folder, spec):
            return folder
    return _hf_cache_folder(spec)


def disk_usage(path: Path) -> int:
    """Bytes used by the files under ``path`` (symlinks into the HF blob store followed)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(dirpath, f))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def local_folder(repo_id: str) -> Path:
    """Where :func:`download` puts ``repo_id``."""
    return config.models_dir() / repo_id


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file (what the Hub reports for non-LFS files)."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _watch_progress(
    folder: Path, total: int, progress: DownloadProgress, stop: threading.Event
) -> None:
    """Report bytes on disk (finished + ``.incomplete`` files) every 0.2 s until stopped."""
    while not stop.wait(0.2):
        progress(min(disk_usage(folder), total), total, "downloading")


def download(
    spec: WeightsSpec,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    progress: DownloadProgress | None = None,
) -> Path:
    """Download ``spec`` into :func:`local_folder`, resuming partial files; verify; return the folder.

    Raises :class:`WeightsError` when the Hub cannot be reached, a file is missing from
    the repo, or a file's checksum does not match the Hub's metadata.
    """
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError as exc:
        raise WeightsError("downloading weights needs huggingface_hub: pip install '.[models]'") from exc

    folder = local_folder(spec.repo_id)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(
            spec.repo_id, revision=spec.revision, files_metadata=True
        )
    except Exception as exc:
        raise WeightsError(f"cannot reach the model hub for {spec.repo_id}: {type(exc).__name__}: {exc}") from exc
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    wanted = list(spec.files) if spec.files else sorted(siblings)
    missing = [f for f in wanted if f not in siblings]
    if missing:
        raise WeightsError(f"{spec.repo_id} has no file(s) {', '.join(missing)}")
    total = sum(int(siblings[f].size or 0) for f in wanted)

    stop = threading.Event()
    watcher = None
    if progress is not None:
        progress(0, total, "starting")
        watcher = threading.Thread(target=_watch_progress, args=(folder, total, progress, stop), daemon=True)
        watcher.start()
    try:
        snapshot_download(
            spec.repo_id,
            revision=info.sha,
            local_dir=folder,
            allow_patterns=wanted,
            endpoint=endpoint,
            token=token,
            max_workers=2,
        )
    except Exception as exc:
        raise WeightsError(
            f"download of {spec.repo_id} failed ({type(exc).__name__}: {exc}); run it again to resume"
        ) from exc
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()

    files: dict[str, dict[str, Any]] = {}
    for name in wanted:
        sib = siblings[name]
        path = folder / name
        if not path.is_file():
            raise WeightsError(f"{spec.repo_id}: {name} missing after download")
        digest = sha256_file(path)
        if sib.lfs is not None and sib.lfs.sha256 and digest != sib.lfs.sha256:
            path.unlink()
            raise WeightsError(f"{spec.repo_id}: {name} is corrupt (sha256 {digest} != {sib.lfs.sha256}); deleted, download again")
        if sib.lfs is None and sib.blob_id and git_blob_sha1(path) != sib.blob_id:
            path.unlink()
            raise WeightsError(f"{spec.repo_id}: {name} is corrupt (git blob id mismatch); deleted, download again")
        files[name] = {"size": path.stat().st_size, "sha256": digest}
    manifest = {"repo_id": spec.repo_id, "revision": info.sha, "license": spec.license, "url": spec.url, "files": files}
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST_NAME)
    if progress is not None:
        progress(total, total, "verified")
    return folder


def verify(folder: Path) -> list[str]:
    """Names of files in ``folder`` whose sha256 differs from its manifest (empty = all good)."""
    manifest = _read_manifest(folder)
    if manifest is None:
        raise WeightsError(f"{folder} has no {MANIFEST_NAME}; nothing to verify against")
    bad = []
    for name, meta in manifest.get("files", {}).items():
        p = folder / name
        if not p.is_file() or sha256_file(p) != meta.get("sha256"):
            bad.append(name)
    return bad


def delete(repo_id: str) -> int:
    """Delete ``repo_id`` from the app's models folder; return the bytes freed.

    The shared Hugging Face cache and ``AMC_MODELS_PATH`` folders belong to the user and
    other apps and are left alone (:func:`find_weights` still reports them).
    """
    folder = local_folder(repo_id)
    root = config.models_dir().resolve()
    if not folder.resolve().is_relative_to(root) or folder.resolve() == root:
        raise WeightsError(f"refusing to delete {folder}: not a model folder")
    if not folder.exists():
        return 0
    freed = disk_usage(folder)
    shutil.rmtree(folder)
    # drop now-empty "org" parents
    parent = folder.parent
    while parent.resolve() != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    return freed
