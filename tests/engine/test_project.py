"""Projects on disk: round trip, schema versions, media, atomic save, autosave and recovery."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.engine import project as pj
from app.engine.mastering.plan import MasteringPlan
from app.engine.mastering.planner import MasterSettings

ROOT = Path(__file__).resolve().parents[2]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@pytest.fixture
def source(tmp_path: Path) -> Path:
    p = tmp_path / "inbox" / "Mix Final.WAV"
    p.parent.mkdir()
    p.write_bytes(os.urandom(300_000))
    return p


def _full_project(sha: str) -> pj.Project:
    p = pj.Project.new("Song", sample_rate=44100, tempo_bpm=92.5)
    src = p.add_track(pj.Track(name="Mix", media_sha=sha, original_filename="Mix Final.WAV", gain_db=-1.5,
                               pan=-0.25, mute=True, clip_gain_db=2.0, offset_s=1.25, color="#ff8800",
                               metrics={"before": {"integrated_lufs": -18.2}}))  # fmt: skip
    p.add_track(pj.Track(name="Lead", kind="midi", midi_clip={"notes": [[60, 0.0, 0.5, 100]], "program": 0}))
    p.add_track(pj.Track(name="Mix (master)", role="master", master_of=src.id, media_sha="ab" * 32,
                         render_file="mix-master.wav", metrics={"after": {"integrated_lufs": -14.0}}))  # fmt: skip
    p.set_settings(MasterSettings(target="apple", style="warm", level="light", amount_eq_pct=55.0))
    p.set_plan(MasteringPlan(sample_rate=44100, channels=2, target="apple"))
    p.selection = [src.id]
    p.loop = pj.LoopRange(2.0, 10.5)
    p.view = {"zoom_px_per_s": 40.0, "scroll_s": 3.0}
    return p


def test_round_trip_keeps_every_field(tmp_path: Path, source: Path) -> None:
    folder = tmp_path / "Song.amcproj"
    sha = pj.import_media(folder, source)
    p = _full_project(sha)
    pj.save(p, folder)
    for sub in ("media", "renders", "autosave"):
        assert (folder / sub).is_dir()
    q = pj.open_project(folder)
    assert q == p
    assert q.folder == folder
    assert q.settings() == MasterSettings(target="apple", style="warm", level="light", amount_eq_pct=55.0)
    assert q.plan() == p.plan()
    assert q.tracks[1].midi_clip == {"notes": [[60, 0.0, 0.5, 100]], "program": 0}
    assert q.tracks[2].master_of == q.tracks[0].id
    assert json.loads((folder / "project.json").read_text())["schema"] == pj.SCHEMA_VERSION
    assert q.media_path(sha).read_bytes() == source.read_bytes()
    pj.close_project(q)
    assert not (folder / pj.LOCK_FILE).exists()


def test_unknown_keys_survive_a_round_trip(tmp_path: Path) -> None:
    d = pj.Project.new("X").to_dict()
    d["plugin_state"] = {"a": 1}
    q = pj.Project.from_dict(d)
    assert q.to_dict()["plugin_state"] == {"a": 1}


def test_newer_schema_is_rejected_with_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "New.amcproj"
    folder.mkdir()
    d = pj.Project.new("New").to_dict()
    d["schema"] = pj.SCHEMA_VERSION + 1
    (folder / "project.json").write_text(json.dumps(d))
    with pytest.raises(pj.ProjectVersionError, match="newer version of the app"):
        pj.open_project(folder)


def test_older_schema_goes_through_the_migration_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    d = pj.Project.new("Old").to_dict()
    d["schema"] = 0
    d["title"] = d.pop("name")  # what a schema-0 file might have called it

    def zero_to_one(data: dict) -> dict:
        data = dict(data)
        data["name"] = data.pop("title")
        return data

    monkeypatch.setitem(pj.MIGRATIONS, 0, zero_to_one)
    assert pj.Project.from_dict(d).name == "Old"
    monkeypatch.delitem(pj.MIGRATIONS, 0)
    with pytest.raises(pj.ProjectVersionError, match="too old"):
        pj.Project.from_dict(d)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"name": "x"}', '{"schema": 1, "name": "x", "tracks": [{"name": "t", "kind": "video"}]}'])
def test_corrupt_project_files_raise_project_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "project.json").write_text(text)
    with pytest.raises(pj.ProjectError):
        pj.open_project(tmp_path, lock=False)


def test_media_is_deduplicated_by_content_and_source_untouched(tmp_path: Path, source: Path) -> None:
    folder = tmp_path / "P.amcproj"
    before_hash, before_stat = _sha(source), _stat(source)
    copy = tmp_path / "other-name.flac"
    copy.write_bytes(source.read_bytes())
    a = pj.import_media(folder, source)
    b = pj.import_media(folder, copy)
    c = pj.import_media(folder, source)
    assert a == b == c == before_hash
    files = [p for p in (folder / "media").iterdir()]
    assert [p.name for p in files] == [f"{a}.wav"]  # one copy, lower-case extension, no temp left over
    assert _sha(source) == before_hash and _stat(source) == before_stat and source.exists()
    other = tmp_path / "different.wav"
    other.write_bytes(b"RIFF" + os.urandom(1000))
    d = pj.import_media(folder, other)
    assert d != a and pj.media_path(folder, d).read_bytes() == other.read_bytes()


def test_unsaved_project_stages_media_then_save_moves_it_in(tmp_path: Path, source: Path) -> None:
    scratch = tmp_path / "recovery"
    p = pj.Project.new("Draft")
    sha = pj.import_media(p, source, scratch_dir=scratch)
    p.add_track(pj.Track(name="Mix", media_sha=sha, original_filename=source.name))
    session = p.session_dir
    assert session is not None and session.parent == scratch
    assert p.media_path(sha).parent == session / "media"
    folder = tmp_path / "Draft.amcproj"
    pj.save(p, folder)
    assert p.folder == folder and p.session_dir is None and not session.exists()
    assert pj.media_path(folder, sha).read_bytes() == source.read_bytes()
    pj.close_project(p)


def test_save_as_of_a_never_saved_project_leaves_nothing_to_recover(tmp_path: Path, source: Path) -> None:
    scratch = tmp_path / "recovery"
    p = pj.Project.new("Draft")
    sha = pj.import_media(p, source, scratch_dir=scratch)
    p.add_track(pj.Track(name="Mix", media_sha=sha))
    pj.autosave(p, scratch)
    session = p.session_dir
    folder = tmp_path / "Draft.amcproj"
    pj.save_as(p, folder)
    assert p.folder == folder and p.session_dir is None and not session.exists()
    assert pj.media_path(folder, sha).read_bytes() == source.read_bytes()
    assert pj.list_recoverable(scratch) == []


def test_save_as_copies_media_and_renders(tmp_path: Path, source: Path) -> None:
    a = tmp_path / "A.amcproj"
    p = pj.Project.new("A")
    pj.save(p, a)
    sha = pj.import_media(p, source)
    src = p.add_track(pj.Track(name="Mix", media_sha=sha))
    render = p.renders_dir() / "mix-master.wav"
    render.write_bytes(b"master bytes")
    take = pj.add_render(p, render, name="Mix (master)", master_of=src.id, metrics={"after": {"integrated_lufs": -14.0}})
    assert take.role == "master" and take.media_sha == _sha(render) and p.audio_path(take) == render
    pj.save(p)
    b = tmp_path / "B.amcproj"
    pj.save_as(p, b)
    assert p.folder == b
    assert not (a / pj.LOCK_FILE).exists() and (b / pj.LOCK_FILE).exists()
    q = pj.open_project(b, force=True)
    assert q.media_path(sha).parent == b / "media"
    assert q.audio_path(q.track(take.id)).read_bytes() == b"master bytes"
    assert (a / "media" / f"{sha}.wav").exists()  # the old project is left as it was


def test_failed_save_leaves_the_old_project_json_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "Safe.amcproj"
    p = pj.Project.new("Safe")
    pj.save(p, folder)
    good = (folder / "project.json").read_bytes()
    p.name = "Changed"
    p.tempo_bpm = 150.0

    def broken_fsync(fd: int) -> None:  # the data is written, the flush to disk fails
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(pj.os, "fsync", broken_fsync)
    with pytest.raises(pj.ProjectError, match="Input/output error"):
        pj.save(p)
    monkeypatch.undo()
    assert (folder / "project.json").read_bytes() == good
    assert not [f for f in folder.iterdir() if f.name.endswith(".tmp")]
    assert pj.open_project(folder, force=True).name == "Safe"


def test_lock_blocks_a_second_live_session(tmp_path: Path) -> None:
    folder = tmp_path / "L.amcproj"
    pj.save(pj.Project.new("L"), folder)
    lock = pj.read_lock(folder)
    assert lock is not None and lock["pid"] == os.getpid()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (folder / pj.LOCK_FILE).write_text(json.dumps({**lock, "pid": child.pid, "started": None}))
        with pytest.raises(pj.ProjectLockedError):
            pj.open_project(folder)
        assert not pj.needs_recovery(folder)  # a live session: nothing to recover
    finally:
        child.kill()
        child.wait()


_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from app.engine import project as pj
    folder, recovery = Path(sys.argv[1]), Path(sys.argv[2])
    p = pj.open_project(folder)
    p.tempo_bpm = 133.0
    p.tracks.append(pj.Track(name="added after save"))
    pj.autosave(p)
    draft = pj.Project.new("Never saved")
    draft.tempo_bpm = 77.0
    pj.autosave(draft, recovery)
    print("autosaved", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_autosave_and_recovery_after_a_killed_session(tmp_path: Path) -> None:
    folder = tmp_path / "Crash.amcproj"
    recovery = tmp_path / "recovery"
    p = pj.Project.new("Crash")
    pj.save(p, folder)
    pj.close_project(p)
    assert not pj.needs_recovery(folder)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(root=str(ROOT)), str(folder), str(recovery)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "autosaved"
        assert pj.read_lock(folder)["pid"] == child.pid
        assert not pj.needs_recovery(folder)  # still running
        with pytest.raises(pj.ProjectLockedError):
            pj.open_project(folder)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert pj.needs_recovery(folder)
    got = pj.recover(folder)
    assert got.tempo_bpm == 133.0 and [t.name for t in got.tracks] == ["added after save"]
    assert got.folder == folder and pj.read_lock(folder)["pid"] == os.getpid()
    assert not pj.needs_recovery(folder)  # we hold it now
    sessions = pj.list_recoverable(recovery)
    assert len(sessions) == 1
    draft = pj.recover(sessions[0])
    assert draft.name == "Never saved" and draft.tempo_bpm == 77.0 and draft.folder is None
    # a clean save + close afterwards leaves nothing to recover
    pj.save(got)
    pj.close_project(got)
    assert not pj.needs_recovery(folder)


def test_autosave_older_than_a_save_is_not_offered(tmp_path: Path) -> None:
    folder = tmp_path / "S.amcproj"
    p = pj.Project.new("S")
    pj.save(p, folder)
    pj.autosave(p)
    pj.save(p)  # saved after the autosave
    lock = json.loads((folder / pj.LOCK_FILE).read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / pj.LOCK_FILE).write_text(json.dumps({**lock, "pid": dead.pid, "started": None}))
    assert not pj.needs_recovery(folder)
