"""Projects on disk: a folder ``Name.amcproj/`` with a versioned ``project.json``.

Layout::

    Name.amcproj/
        project.json        the project (schema SCHEMA_VERSION), written atomically
        media/<sha256><ext> imported audio, content-addressed: one copy per content
        renders/            master takes (files rendered by the app)
        autosave/project.json   the latest autosave of the open session
        session.lock        pid, host, time of the session that has it open

Rules
    * Sources are never modified or moved: importing copies the bytes (hashing them
      on the way) into ``media/`` and renames the copy into place once it is complete.
    * Every write of ``project.json`` (save or autosave) goes to a temp file in the same
      folder, is fsync'ed, renamed over the old file, and the folder is fsync'ed; a
      failure leaves the previous file untouched.
    * A never-saved project lives in a *session folder* (same layout) under a folder the
      caller gives (the recovery area); :func:`save` moves its media into the project.
    * A session lock left by a process that is gone, with an autosave newer than
      ``project.json``, means the app crashed: :func:`needs_recovery` /
      :func:`recover`.  Call them *before* :func:`open_project` (which takes the lock).

Threading: plain file I/O; call from a worker thread for large imports.  One
:class:`Project` object belongs to one thread at a time (the UI's).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from app.engine.errors import AmcError
from app.engine.mastering.plan import MasteringPlan
from app.engine.mastering.planner import MasterSettings

__all__ = [
    "AUTOSAVE_DIR",
    "LOCK_FILE",
    "MEDIA_DIR",
    "MIGRATIONS",
    "PROJECT_FILE",
    "PROJECT_SUFFIX",
    "RENDERS_DIR",
    "SCHEMA_VERSION",
    "LoopRange",
    "Project",
    "ProjectError",
    "ProjectLockedError",
    "ProjectVersionError",
    "Track",
    "add_render",
    "autosave",
    "close_project",
    "file_sha256",
    "import_media",
    "list_recoverable",
    "media_path",
    "needs_recovery",
    "open_project",
    "read_lock",
    "recover",
    "save",
    "save_as",
]

SCHEMA_VERSION = 1
PROJECT_SUFFIX = ".amcproj"
PROJECT_FILE = "project.json"
MEDIA_DIR = "media"
RENDERS_DIR = "renders"
AUTOSAVE_DIR = "autosave"
LOCK_FILE = "session.lock"
_SESSION_PREFIX = "session-"
_CHUNK_BYTES = 1 << 20

#: ``MIGRATIONS[n]`` turns a schema-``n`` project dict into a schema-``n + 1`` one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class ProjectError(AmcError):
    """A project cannot be read or written (missing, corrupt, unwritable)."""

    exit_code = 6


class ProjectVersionError(ProjectError):
    """``project.json`` was written by a newer app (a schema this version cannot read)."""


class ProjectLockedError(ProjectError):
    """The project is open in another running session."""


# ============================================================================ model

TrackKind = Literal["audio", "midi"]
TrackRole = Literal["source", "master"]


@dataclass
class Track:
    """One lane of the project.

    ``media_sha`` names the audio in ``media/`` (or, for a master take with
    ``render_file``, the hash of that file in ``renders/``).  ``midi_clip`` is the MIDI
    layer's own dict (``app.midi.files.clip_to_dict``), stored as is.
    """

    name: str
    kind: TrackKind = "audio"
    role: TrackRole = "source"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    media_sha: str | None = None
    original_filename: str | None = None
    render_file: str | None = None  # name inside renders/ (master takes)
    gain_db: float = 0.0
    pan: float = 0.0  # -1 (left) .. +1 (right)
    mute: bool = False
    solo: bool = False
    clip_gain_db: float = 0.0
    offset_s: float = 0.0
    color: str = "#5b9bd5"
    master_of: str | None = None  # id of the source track this take masters
    metrics: dict[str, Any] = field(default_factory=dict)
    midi_clip: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("audio", "midi"):
            raise ProjectError(f"track {self.name!r}: kind must be 'audio' or 'midi', got {self.kind!r}")
        if self.role not in ("source", "master"):
            raise ProjectError(f"track {self.name!r}: role must be 'source' or 'master', got {self.role!r}")
        if not -1.0 <= float(self.pan) <= 1.0:
            raise ProjectError(f"track {self.name!r}: pan must be within -1..1, got {self.pan}")


@dataclass
class LoopRange:
    start_s: float
    end_s: float
    enabled: bool = True


@dataclass
class Project:
    """The document: tracks, mastering state, and optional UI state.

    ``folder`` (where it was opened/saved) and ``session_dir`` (where a never-saved
    project keeps its media) are runtime attributes, not written to JSON.
    """

    name: str
    sample_rate: int = 48000
    tempo_bpm: float = 120.0
    tracks: list[Track] = field(default_factory=list)
    master_settings: dict[str, Any] = field(default_factory=lambda: asdict(MasterSettings()))
    master_plan: dict[str, Any] | None = None  # MasteringPlan.to_dict() of the last plan
    selection: list[str] = field(default_factory=list)  # selected track ids
    loop: LoopRange | None = None
    view: dict[str, Any] = field(default_factory=dict)  # zoom, scroll... (UI-owned)
    created: float = field(default_factory=time.time)
    modified: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept for round trips
    folder: Path | None = field(default=None, compare=False, repr=False)
    session_dir: Path | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def new(cls, name: str, *, sample_rate: int = 48000, tempo_bpm: float = 120.0) -> Project:
        if not name.strip():
            raise ProjectError("a project needs a name")
        return cls(name=name.strip(), sample_rate=int(sample_rate), tempo_bpm=float(tempo_bpm))

    # ------------------------------------------------------------------ tracks
    def track(self, track_id: str) -> Track:
        for t in self.tracks:
            if t.id == track_id:
                return t
        raise KeyError(track_id)

    def add_track(self, track: Track) -> Track:
        self.tracks.append(track)
        return track

    def remove_track(self, track_id: str) -> None:
        self.tracks = [t for t in self.tracks if t.id != track_id]
        self.selection = [s for s in self.selection if s != track_id]

    # ------------------------------------------------------------------ mastering state
    def settings(self) -> MasterSettings:
        known = {f.name for f in fields(MasterSettings)}
        return MasterSettings(**{k: v for k, v in self.master_settings.items() if k in known})

    def set_settings(self, settings: MasterSettings) -> None:
        self.master_settings = asdict(settings)

    def plan(self) -> MasteringPlan | None:
        return MasteringPlan.from_dict(copy.deepcopy(self.master_plan)) if self.master_plan else None

    def set_plan(self, plan: MasteringPlan | None) -> None:
        self.master_plan = plan.to_dict() if plan is not None else None

    # ------------------------------------------------------------------ files
    @property
    def home(self) -> Path | None:
        """Where media and renders of this project live now (folder, else session dir)."""
        return self.folder if self.folder is not None else self.session_dir

    def media_path(self, sha: str) -> Path:
        """The file holding content ``sha`` (media/ of the folder or of the session)."""
        for root in (self.folder, self.session_dir):
            if root is not None:
                p = _find_media(root, sha)
                if p is not None:
                    return p
        raise ProjectError(f"media {sha[:12]}… is missing from project {self.name!r}")

    def audio_path(self, track: Track) -> Path:
        """The audio file a track plays: its render (master takes) or its media."""
        if track.render_file:
            for root in (self.folder, self.session_dir):
                if root is not None and (root / RENDERS_DIR / track.render_file).is_file():
                    return root / RENDERS_DIR / track.render_file
            raise ProjectError(f"render {track.render_file} of track {track.name!r} is missing")
        if track.media_sha is None:
            raise ProjectError(f"track {track.name!r} has no audio")
        return self.media_path(track.media_sha)

    def renders_dir(self, scratch_dir: Path | None = None) -> Path:
        """Folder for new master takes (created); ``scratch_dir`` hosts a never-saved project."""
        return _ensure_layout(self._home_or_session(scratch_dir)) / RENDERS_DIR

    def _home_or_session(self, scratch_dir: Path | None) -> Path:
        if self.home is not None:
            return self.home
        if scratch_dir is None:
            raise ProjectError("this project has never been saved: pass a scratch folder for its session")
        self.session_dir = Path(scratch_dir) / f"{_SESSION_PREFIX}{uuid.uuid4().hex[:12]}"
        _ensure_layout(self.session_dir)
        return self.session_dir

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": SCHEMA_VERSION}
        for f in fields(self):
            if f.name in ("folder", "session_dir", "extra"):
                continue
            v = getattr(self, f.name)
            if f.name == "tracks":
                v = [asdict(t) for t in v]
            elif f.name == "loop":
                v = asdict(v) if v is not None else None
            else:
                v = copy.deepcopy(v)
            d[f.name] = v
        for k, v in self.extra.items():
            d.setdefault(k, copy.deepcopy(v))
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Project:
        """Build from a ``project.json`` dict (migrating older schemas, rejecting newer)."""
        data = migrate(data)
        known = {f.name for f in fields(cls)} - {"folder", "session_dir", "extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k != "schema"}
        try:
            kwargs["tracks"] = [_build_track(t) for t in data.get("tracks", [])]
            if data.get("loop") is not None:
                kwargs["loop"] = LoopRange(**data["loop"])
            project = cls(**kwargs, extra=extra)
        except (TypeError, ValueError) as exc:
            raise ProjectError(f"invalid project: {exc}") from exc
        if not isinstance(project.name, str) or not project.name:
            raise ProjectError("invalid project: no name")
        return project

    @classmethod
    def from_json(cls, text: str) -> Project:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProjectError(f"project file is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ProjectError("project file must hold a JSON object")
        return cls.from_dict(data)


def _build_track(d: Any) -> Track:
    if not isinstance(d, dict):
        raise TypeError("a track must be an object")
    known = {f.name for f in fields(Track)}
    return Track(**{k: v for k, v in d.items() if k in known})


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a project dict to :data:`SCHEMA_VERSION` through :data:`MIGRATIONS`."""
    version = data.get("schema")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProjectError("project file has no valid 'schema' version")
    if version > SCHEMA_VERSION:
        raise ProjectVersionError(
            f"this project was saved by a newer version of the app (project schema {version}; "
            f"this version reads schema {SCHEMA_VERSION} and older): update the app to open it"
        )
    data = dict(data)
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ProjectVersionError(f"project schema {version} is too old to open (no migration to {version + 1})")
        data = step(data)
        version += 1
        data["schema"] = version
    return data


# ============================================================================ atomic files


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: temp file, fsync, rename, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ProjectError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _ensure_layout(folder: Path) -> Path:
    try:
        for sub in (MEDIA_DIR, RENDERS_DIR, AUTOSAVE_DIR):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProjectError(f"cannot create project folder {folder}: {exc.strerror or exc}") from exc
    return folder


# ============================================================================ media


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _find_media(root: Path, sha: str) -> Path | None:
    d = root / MEDIA_DIR
    if not d.is_dir():
        return None
    for p in d.glob(f"{sha}*"):
        if p.name == sha or p.name.startswith(sha + "."):
            return p
    return None


def media_path(folder: Path, sha: str) -> Path:
    """The file holding content ``sha`` in project ``folder``."""
    p = _find_media(Path(folder), sha)
    if p is None:
        raise ProjectError(f"media {sha[:12]}… is missing from {folder}")
    return p


def import_media(target: Project | Path, path: Path, *, scratch_dir: Path | None = None) -> str:
    """Copy ``path`` into the project's ``media/`` (once per content); return its SHA-256.

    ``target`` is a project folder or a :class:`Project`; a never-saved project keeps
    its media in a session folder under ``scratch_dir``.  The source is only read.
    """
    path = Path(path)
    if isinstance(target, Project):
        root = target._home_or_session(scratch_dir)
    else:
        root = Path(target)
    media = _ensure_layout(root) / MEDIA_DIR
    tmp = media / f".import-{uuid.uuid4().hex[:8]}.tmp"
    h = hashlib.sha256()
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(_CHUNK_BYTES):
                h.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        sha = h.hexdigest()
        if _find_media(root, sha) is not None:
            tmp.unlink()
            return sha
        os.replace(tmp, media / f"{sha}{path.suffix.lower()}")
        _fsync_dir(media)
        return sha
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ProjectError(f"cannot import {path.name}: {exc.strerror or exc}") from exc


def add_render(
    project: Project,
    render: Path,
    *,
    name: str,
    master_of: str | None = None,
    metrics: dict[str, Any] | None = None,
    scratch_dir: Path | None = None,
) -> Track:
    """Register a rendered master take as a new track.

    ``render`` should already be inside :meth:`Project.renders_dir` (the app renders
    there); a file elsewhere is copied in.  The take is hashed for integrity and sync.
    """
    render = Path(render)
    rdir = project.renders_dir(scratch_dir)
    if render.parent.resolve() != rdir.resolve():
        dest = rdir / render.name
        if dest.exists():
            dest = rdir / f"{render.stem}-{uuid.uuid4().hex[:6]}{render.suffix}"
        tmp = rdir / f".{dest.name}.tmp"
        try:
            shutil.copyfile(render, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ProjectError(f"cannot copy render {render.name}: {exc.strerror or exc}") from exc
        render = dest
    take = Track(
        name=name, role="master", media_sha=file_sha256(render), original_filename=render.name,
        render_file=render.name, master_of=master_of, metrics=dict(metrics or {}),
    )  # fmt: skip
    if master_of is not None:
        src = project.track(master_of)
        take.offset_s = src.offset_s
    return project.add_track(take)


# ============================================================================ locks


def _host() -> str:
    return socket.gethostname()


def _process_start_time(pid: int) -> float | None:
    try:
        import psutil  # optional: guards against a recycled pid
    except ImportError:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


def _pid_alive(pid: int, started: float | None) -> bool:
    try:
        import psutil
    except ImportError:
        psutil = None  # type: ignore[assignment]
    if psutil is not None:
        if not psutil.pid_exists(pid):
            return False
        try:
            p = psutil.Process(pid)
            if p.status() == psutil.STATUS_ZOMBIE:
                return False
            return started is None or abs(p.create_time() - started) < 1.0
        except psutil.Error:
            return False
    if os.name == "nt":  # os.kill would terminate it; without psutil assume alive (no recovery offered)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_lock(folder: Path) -> None:
    info = {"pid": os.getpid(), "host": _host(), "time": time.time(), "started": _process_start_time(os.getpid())}
    _atomic_write(folder / LOCK_FILE, json.dumps(info).encode())


def read_lock(folder: Path) -> dict[str, Any] | None:
    """The session lock of ``folder`` (pid, host, time), or None."""
    try:
        data = json.loads((Path(folder) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _lock_is_ours(lock: dict[str, Any] | None) -> bool:
    return bool(lock) and lock.get("pid") == os.getpid() and lock.get("host") == _host()


def _lock_is_stale(lock: dict[str, Any]) -> bool:
    """True when the lock's process is gone (only decidable on the same host)."""
    if lock.get("host") != _host():
        return False
    pid = lock.get("pid")
    return isinstance(pid, int) and not _pid_alive(pid, lock.get("started"))


# ============================================================================ open / save / close


def open_project(folder: Path, *, lock: bool = True, force: bool = False) -> Project:
    """Read ``folder/project.json`` and take the session lock.

    Raises ProjectLockedError when another live session on this host holds it (unless
    ``force``); ProjectVersionError for a newer schema; ProjectError otherwise.
    """
    folder = Path(folder)
    try:
        text = (folder / PROJECT_FILE).read_text(encoding="utf-8")
    except OSError as exc:
        raise ProjectError(f"cannot open project {folder}: {exc.strerror or exc}") from exc
    project = Project.from_json(text)
    project.folder = folder
    if lock:
        current = read_lock(folder)
        if current and not force and not _lock_is_ours(current) and current.get("host") == _host() and not _lock_is_stale(current):
            raise ProjectLockedError(f"project {folder.name} is open in another session (pid {current.get('pid')})")
        _ensure_layout(folder)
        _write_lock(folder)
    return project


def save(project: Project, folder: Path | None = None) -> Path:
    """Write the project to ``folder`` (default: where it lives) atomically; return the folder.

    Media of a never-saved project move from its session folder into ``folder``.
    Saving into a different folder than the project's own is :func:`save_as`.
    """
    if folder is None:
        if project.folder is None:
            raise ProjectError("this project has never been saved: choose a folder")
        folder = project.folder
    folder = Path(folder)
    if project.folder is not None and Path(project.folder).resolve() != folder.resolve():
        return save_as(project, folder)
    _ensure_layout(folder)
    if project.folder is None and project.session_dir is not None:
        _transfer_files(project, project.session_dir, folder, move=True)
    project.modified = time.time()
    _atomic_write(folder / PROJECT_FILE, (project.to_json() + "\n").encode())
    if project.folder is None:
        project.folder = folder
        if project.session_dir is not None:
            _discard_session(project.session_dir)
            project.session_dir = None
        _write_lock(folder)
    return folder


def save_as(project: Project, folder: Path) -> Path:
    """Save into a new folder, copying every media file and render the project uses."""
    folder = Path(folder)
    src = project.home
    session = project.session_dir if project.folder is None else None
    _ensure_layout(folder)
    if src is not None and Path(src).resolve() != folder.resolve():
        # A never-saved project's session is ours: move its files; a saved project keeps its own.
        _transfer_files(project, Path(src), folder, move=session is not None)
    old_folder = project.folder
    project.modified = time.time()
    _atomic_write(folder / PROJECT_FILE, (project.to_json() + "\n").encode())
    if old_folder is not None:
        _release_lock(Path(old_folder))
    if session is not None:
        _discard_session(session)  # otherwise it would be offered for recovery next start
    project.folder = folder
    project.session_dir = None
    _write_lock(folder)
    return folder


def _transfer_files(project: Project, src: Path, dst: Path, *, move: bool) -> None:
    shas = {t.media_sha for t in project.tracks if t.media_sha and not t.render_file}
    renders = {t.render_file for t in project.tracks if t.render_file}
    try:
        for sha in shas:
            p = _find_media(src, sha)
            if p is None or _find_media(dst, sha) is not None:
                continue
            _place(p, dst / MEDIA_DIR / p.name, move=move)
        for name in renders:
            p = src / RENDERS_DIR / name
            if p.is_file() and not (dst / RENDERS_DIR / name).exists():
                _place(p, dst / RENDERS_DIR / name, move=move)
    except OSError as exc:
        raise ProjectError(f"cannot copy project media to {dst}: {exc.strerror or exc}") from exc
    _fsync_dir(dst / MEDIA_DIR)
    _fsync_dir(dst / RENDERS_DIR)


def _place(src: Path, dest: Path, *, move: bool) -> None:
    if move:
        try:
            os.replace(src, dest)  # same file system: instant and atomic
            return
        except OSError:
            pass
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)


def _release_lock(folder: Path) -> None:
    if _lock_is_ours(read_lock(folder)):
        with contextlib.suppress(OSError):
            (folder / LOCK_FILE).unlink()


def _discard_session(session: Path) -> None:
    shutil.rmtree(session, ignore_errors=True)


def close_project(project: Project, *, discard_session: bool = True) -> None:
    """Clean close: remove this session's lock (and a never-saved project's session folder)."""
    if project.folder is not None:
        _release_lock(Path(project.folder))
    if project.session_dir is not None:
        _release_lock(project.session_dir)
        if discard_session:
            _discard_session(project.session_dir)
            project.session_dir = None


# ============================================================================ autosave / recovery


def autosave(project: Project, folder: Path | None = None) -> Path:
    """Write ``autosave/project.json`` atomically (and make sure our lock is there).

    ``folder`` defaults to the project's folder; for a never-saved project pass the
    recovery area: the project's session folder is created there.  Returns the file.
    """
    if project.folder is not None:
        root = Path(folder) if folder is not None else Path(project.folder)
    else:
        root = project._home_or_session(folder)
    _ensure_layout(root)
    if not _lock_is_ours(read_lock(root)):
        _write_lock(root)
    dest = root / AUTOSAVE_DIR / PROJECT_FILE
    _atomic_write(dest, (project.to_json() + "\n").encode())
    return dest


def needs_recovery(folder: Path) -> bool:
    """True when a session died with ``folder`` open and left newer autosaved work."""
    folder = Path(folder)
    lock = read_lock(folder)
    if not lock or _lock_is_ours(lock) or not _lock_is_stale(lock):
        return False
    auto = folder / AUTOSAVE_DIR / PROJECT_FILE
    if not auto.is_file():
        return False
    main = folder / PROJECT_FILE
    return not main.is_file() or auto.stat().st_mtime_ns > main.stat().st_mtime_ns


def recover(folder: Path) -> Project:
    """Load the autosaved state of ``folder`` and take over its session lock.

    The returned project is unsaved work: its ``folder`` is set for a project folder;
    for a session folder from the recovery area it stays never-saved (``session_dir``).
    """
    folder = Path(folder)
    try:
        text = (folder / AUTOSAVE_DIR / PROJECT_FILE).read_text(encoding="utf-8")
    except OSError as exc:
        raise ProjectError(f"nothing to recover in {folder}: {exc.strerror or exc}") from exc
    project = Project.from_json(text)
    if folder.name.startswith(_SESSION_PREFIX):
        project.session_dir = folder
    else:
        project.folder = folder
    _write_lock(folder)
    return project


def list_recoverable(recovery_dir: Path) -> list[Path]:
    """Session folders of never-saved projects in the recovery area that need recovery."""
    d = Path(recovery_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.startswith(_SESSION_PREFIX) and needs_recovery(p))
