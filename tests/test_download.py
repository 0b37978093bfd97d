"""The downloader against a local HTTP server (127.0.0.1 only) serving archives made here."""

import collections
import hashlib
import io
import math
import os
import re
import tarfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from moodtheme.data import download as dl
from moodtheme.data.download import DownloadError, cli, download, read_sha256_list

NAME = "autotagging_moodtheme_melspecs-{}.tar"


class Server:
    """Serves ``files`` with HTTP Range; ``drop_once[name] = n`` cuts the first reply after n bytes.

    ``misbehave[name] = reply(handler, data, start)`` answers that file's requests instead
    (``start``: the first byte of the requested range, 0 without one).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_once: dict[str, int] = {}
        self.misbehave: dict[str, Callable[[BaseHTTPRequestHandler, bytes, int], None]] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                range_header = self.headers.get("Range")
                server.requests.append((name, range_header))
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if name in server.misbehave:
                    try:
                        server.misbehave[name](self, data, int(match[1]) if match else 0)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client hung up, as it should on a misbehaving server
                    return
                if match and not server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.drop_once.pop(name, None)
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/melspecs/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    with Server() as s:
        yield s


def npy_bytes(seed: int, frames: int = 2000) -> bytes:
    buffer = io.BytesIO()
    mel = np.random.default_rng(seed).normal(size=(96, frames)).astype(np.float32)
    np.save(buffer, mel)
    return buffer.getvalue()


def make_tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in sorted({name.split("/")[0] for name in members if "/" in name}):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Release:
    """Two archives (00, 01) of real-looking tracks, their sha256 lists, served by ``server``."""

    def __init__(self, tmp_path: Path, server: Server) -> None:
        self.tracks = {
            "00/100.npy": npy_bytes(0),
            "00/200.npy": npy_bytes(1),
            "01/101.npy": npy_bytes(2),
        }
        self.archives = {
            NAME.format(key): make_tar({k: v for k, v in self.tracks.items() if k.startswith(key)})
            for key in ("00", "01")
        }
        self.tars_list = tmp_path / "tars.txt"
        self.tracks_list = tmp_path / "tracks.txt"
        self.write_lists()
        server.files.update(self.archives)
        self.server = server
        self.out = tmp_path / "data"

    def write_lists(self, tracks: dict[str, bytes] | None = None) -> None:
        self.tars_list.write_text("".join(f"{sha(d)}  {n}\n" for n, d in self.archives.items()))
        tracks = self.tracks if tracks is None else tracks
        self.tracks_list.write_text("".join(f"{sha(d)} {n}\n" for n, d in tracks.items()))

    def run(self, archives: str | None = "00,01", **kwargs):
        kwargs = {"retries": 2, "timeout": 10, "retry_wait": 0, "progress": False, **kwargs}
        return download(
            self.out, self.server.url, archives, self.tars_list, self.tracks_list, **kwargs
        )

    def cli(self, *extra: str) -> int:
        args = ["--to", str(self.out), "--base-url", self.server.url, "--quiet"]
        args += ["--sha256-tars", str(self.tars_list), "--sha256-tracks", str(self.tracks_list)]
        return cli(args + list(extra))

    def assert_tracks_unpacked(self, names=None) -> None:
        for name in names or self.tracks:
            assert (self.out / name).read_bytes() == self.tracks[name]
            assert np.load(self.out / name).shape == (96, 2000)

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.out.rglob("*") if p.suffix in (".part", ".tar"))


@pytest.fixture
def release(tmp_path, server):
    return Release(tmp_path, server)


def test_download_verifies_unpacks_and_skips_verified_archives(release, capsys):
    assert release.cli("--archives", "00,01") == 0
    assert "all archives verified" in capsys.readouterr().out
    release.assert_tracks_unpacked()
    assert release.leftovers() == []  # archives removed after unpacking by default
    assert sorted(p.name for p in (release.out / ".verified").iterdir()) == [
        NAME.format("00") + ".sha256",
        NAME.format("01") + ".sha256",
    ]
    assert [r[1] for r in release.server.requests] == [None, None]

    release.server.requests.clear()
    assert release.run() == []
    assert release.server.requests == []  # nothing fetched again


def test_dropped_connection_resumes_with_range(release):
    archive = NAME.format("00")
    release.server.drop_once[archive] = 3000
    assert release.run("00", keep_archives=True) == []
    assert release.server.requests == [(archive, None), (archive, "bytes=3000-")]
    assert (release.out / archive).read_bytes() == release.archives[archive]
    release.assert_tracks_unpacked(["00/100.npy", "00/200.npy"])


def test_resume_from_an_existing_part_file(release, capsys):
    archive = NAME.format("01")
    release.out.mkdir()
    (release.out / f"{archive}.part").write_bytes(release.archives[archive][:5000])
    assert release.run("01", progress=True) == []
    assert release.server.requests == [(archive, "bytes=5000-")]
    size = len(release.archives[archive]) / 1000
    bar = capsys.readouterr().err.splitlines()[-1]  # bytes so far / total, percent, rate
    assert bar.startswith(f"{archive} {size:.1f} kB/{size:.1f} kB 100.0%") and bar.endswith("B/s")
    release.assert_tracks_unpacked(["01/101.npy"])
    assert release.leftovers() == []


def test_complete_part_file_is_finished_without_refetching(release):
    archive = NAME.format("01")
    release.out.mkdir()
    (release.out / f"{archive}.part").write_bytes(release.archives[archive])
    assert release.run("01") == []
    assert release.server.requests == [(archive, f"bytes={len(release.archives[archive])}-")]
    release.assert_tracks_unpacked(["01/101.npy"])


def test_server_ignoring_range_restarts_the_file_and_says_so(release):
    archive = NAME.format("00")
    release.out.mkdir()
    (release.out / f"{archive}.part").write_bytes(b"x" * 700)  # junk that must not survive
    release.server.ignore_range = True
    logs: list[str] = []
    assert release.run("00", log=logs.append) == []
    url = release.server.url + archive
    assert logs[0] == f"{url}: the server ignored the request to resume at byte 700; from zero"
    release.assert_tracks_unpacked(["00/100.npy", "00/200.npy"])


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_bad_archive_is_deleted_with_a_clear_error(release, capsys, damage):
    archive = NAME.format("00")
    data = release.archives[archive]
    if damage == "truncated":
        release.server.files[archive] = data[: len(data) // 2]
    else:
        release.server.files[archive] = data[:4000] + bytes([data[4000] ^ 0xFF]) + data[4001:]
    assert release.cli("--archives", "00-01") == 1
    err = capsys.readouterr().err
    assert f"bad archive {archive}: sha256" in err and "run the command again" in err
    assert "Traceback" not in err
    assert release.leftovers() == []  # neither the .part nor a .tar is left behind
    assert not (release.out / "00").exists()
    release.assert_tracks_unpacked(["01/101.npy"])  # the good archive still went through

    release.server.files[archive] = data  # fixed upstream: the next run completes
    release.server.requests.clear()
    assert release.cli() == 0  # every listed archive: 01 is skipped as verified
    assert release.server.requests == [(archive, None)]


def test_bad_track_is_removed_and_reported(release):
    wrong = dict(release.tracks)
    wrong["00/200.npy"] = b"something else"
    release.write_lists(wrong)
    problems = release.run("00")
    assert len(problems) == 1 and "bad track" in problems[0] and "00/200.npy" in problems[0]
    assert not (release.out / "00/200.npy").exists()
    assert not list(release.out.rglob("*.npy.part"))
    release.assert_tracks_unpacked(["00/100.npy"])
    assert not (release.out / ".verified" / f"{NAME.format('00')}.sha256").exists()
    # The verified archive is kept, so fixing the list needs no new download.
    release.write_lists()
    release.server.requests.clear()
    assert release.run("00") == []
    assert release.server.requests == []
    release.assert_tracks_unpacked(["00/100.npy", "00/200.npy"])


def test_unpack_never_writes_outside_the_target(release, tmp_path):
    evil = {"00/100.npy": release.tracks["00/100.npy"], "../escape.npy": b"x", "/tmp/abs.npy": b"y"}
    archive = NAME.format("00")
    release.archives = {archive: make_tar(evil, links={"00/link.npy": "/etc/passwd"})}
    release.write_lists({**release.tracks, "../escape.npy": b"x"})
    release.server.files.update(release.archives)
    problems = release.run("00")
    text = "\n".join(problems)
    assert "unsafe path" in text and "../escape.npy" in text and "/tmp/abs.npy" in text
    assert "not a regular file" in text and "00/link.npy" in text
    assert "missing track" in text and "00/200.npy" in text
    assert not (tmp_path / "escape.npy").exists() and not (release.out / "00/link.npy").exists()
    release.assert_tracks_unpacked(["00/100.npy"])


def test_http_errors_and_bad_arguments_are_one_line(release, capsys):
    release.archives[NAME.format("02")] = b"never served"
    release.write_lists()
    assert release.cli("--archives", "02") == 1
    err = capsys.readouterr().err
    assert "HTTP 404" in err and NAME.format("02") in err and "--base-url" in err
    assert "Traceback" not in err
    assert release.cli("--archives", "07") == 1
    assert "no archive '07'" in capsys.readouterr().err


def test_network_failure_keeps_the_part_for_the_next_run(release):
    archive = NAME.format("00")
    release.server.drop_once[archive] = 2000
    with pytest.raises(DownloadError, match="resume"):
        release.run("00", retries=0)
    assert (release.out / f"{archive}.part").stat().st_size == 2000
    assert release.run("00") == []


def test_sha256_lists_and_bundled_defaults(tmp_path):
    tars = read_sha256_list(dl.SHA256_TARS)
    assert len(tars) == 100 and NAME.format("00") in tars and NAME.format("99") in tars
    tracks = read_sha256_list(dl.SHA256_TRACKS)
    assert len(tracks) == 18486 and all(re.fullmatch(r"\d\d/\d+\.npy", n) for n in tracks)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{'a' * 64}  ok.tar\nnot-a-digest x.tar\n")
    with pytest.raises(DownloadError, match=r"bad.txt:2: expected"):
        read_sha256_list(bad)
    assert dl.DEFAULT_BASE_URL.startswith("https://cdn.freesound.org/mtg-jamendo/")


def test_default_cap_exceeds_every_official_archive():
    """The bound behind DEFAULT_MAX_ARCHIVE_BYTES, from the bundled metadata (see its comment)."""
    from moodtheme.data.jamendo import SUBSETS, read_split, split_tsv
    from moodtheme.data.synth import FRAMES_PER_SECOND, N_MELS

    durations: dict[str, float] = {}
    for split in range(5):
        for subset in SUBSETS:
            table = read_split(split_tsv(split, subset))
            durations.update(zip(table.paths, table.durations, strict=True))
    tracks = read_sha256_list(dl.SHA256_TRACKS)

    def track_bytes(seconds: float) -> int:  # float32 mels, plus the npy and tar headers
        return 4 * N_MELS * math.ceil(seconds * FRAMES_PER_SECOND) + 1024

    longest = track_bytes(max(durations.values()))
    archives: collections.Counter[str] = collections.Counter()
    for name in tracks:  # a track without a duration counts as long as the longest one
        archives[name[:2]] += track_bytes(durations[name]) if name in durations else longest
    assert len(archives) == 100 and sum(name not in durations for name in tracks) == 504
    assert 1.4e9 < max(archives.values()) < 1.7e9 < dl.DEFAULT_MAX_ARCHIVE_BYTES


# Servers and folders that misbehave: each case was probed against the code before the fix.


def reply(handler: BaseHTTPRequestHandler, status: int, headers: dict, body: bytes = b"") -> None:
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, str(value))
    handler.end_headers()
    handler.wfile.write(body)


def test_symlinked_part_file_is_refused(release, tmp_path, capsys):
    archive = NAME.format("00")
    outside, dangling = tmp_path / "outside.bin", tmp_path / "created.bin"
    outside.write_bytes(b"precious")  # before: resumed at byte 8, the rest appended to it
    release.out.mkdir()
    for target in (outside, dangling):  # before: the dangling one got the whole download
        part = release.out / f"{archive}.part"
        part.symlink_to(target)
        assert release.cli("--archives", "00") == 1
        err = capsys.readouterr().err.strip()
        assert err == (
            f"error: {part} is a symbolic link (to {target}); the download never reads or "
            "writes through a link inside --to: remove the link and run again"
        )
        part.unlink()
    assert release.server.requests == []  # refused before asking the server anything
    assert outside.read_bytes() == b"precious" and not dangling.exists()
    assert release.cli("--archives", "00") == 0


@pytest.mark.parametrize("target", ["copy elsewhere", "/dev/zero"])
def test_symlinked_archive_is_refused(release, tmp_path, capsys, target):
    # Before: a link to a good copy was unpacked through, and /dev/zero was hashed forever.
    archive = NAME.format("00")
    if target == "copy elsewhere":
        target = tmp_path / "copy.tar"
        target.write_bytes(release.archives[archive])
    release.out.mkdir()
    (release.out / archive).symlink_to(target)
    assert release.cli("--archives", "00") == 1
    assert f"{archive} is a symbolic link (to {target})" in capsys.readouterr().err
    assert (release.out / archive).is_symlink() and not (release.out / "00").exists()


@pytest.mark.parametrize("link", ["00", "00/100.npy.part", "00/100.npy"])
def test_links_on_a_tracks_way_are_refused(release, tmp_path, link):
    # Before: 00/100.npy.part was written through (the victim got the track), and a link at
    # 00/100.npy was silently replaced.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "victim.npy").write_bytes(b"precious")
    (release.out / "00").mkdir(parents=True, exist_ok=link != "00")
    if link == "00":
        (release.out / "00").rmdir()
    (release.out / link).symlink_to(elsewhere if link == "00" else elsewhere / "victim.npy")
    problems = release.run("00")
    assert any(p.startswith(f"{release.out / link} is a symbolic link") for p in problems)
    assert [p.name for p in elsewhere.iterdir()] == ["victim.npy"]
    assert (elsewhere / "victim.npy").read_bytes() == b"precious"
    assert (release.out / NAME.format("00")).is_file()  # kept: no new download once fixed
    (release.out / link).unlink()
    assert release.run("00") == [] and release.server.requests == [(NAME.format("00"), None)]


@pytest.mark.parametrize("link", [".verified", ".verified/{}.sha256"])
def test_linked_verified_marker_is_refused(release, tmp_path, link):
    # Before: the marker was written into the folder .verified pointed to.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (release.out / ".verified").mkdir(parents=True, exist_ok=link != ".verified")
    if link == ".verified":
        (release.out / ".verified").rmdir()
    link = link.format(NAME.format("00"))
    (release.out / link).symlink_to(elsewhere if link == ".verified" else elsewhere / "marker")
    with pytest.raises(DownloadError, match=re.escape(f"{link} is a symbolic link")):
        release.run("00")
    assert list(elsewhere.iterdir()) == []


def test_hard_linked_part_file_is_refused(release, tmp_path):
    archive = NAME.format("00")
    other = tmp_path / "other.bin"
    other.write_bytes(release.archives[archive][:3000])
    release.out.mkdir()
    os.link(other, release.out / f"{archive}.part")
    with pytest.raises(DownloadError, match=r"\.part has 2 hard links, .* remove it"):
        release.run("00")
    assert other.read_bytes() == release.archives[archive][:3000]


@pytest.mark.parametrize("swap", ["part", "folder"])
def test_link_planted_just_before_opening_is_not_written_through(
    release, tmp_path, monkeypatch, swap
):
    # A link planted after the checks, as the file (or its folder) is opened: O_NOFOLLOW on
    # each part of the way refuses it, and nothing is created or changed at its target.
    archive = NAME.format("00")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "victim").write_bytes(b"precious")
    release.out.mkdir()
    if swap == "part":
        link, plant_at = release.out / f"{archive}.part", f"{archive}.part"
        link.write_bytes(release.archives[archive][:3000])
    else:
        link, plant_at = release.out / "00", "00"
    real_open = os.open

    def open_after_planting(path, flags, *args, **kwargs):
        if path == plant_at and not link.is_symlink():
            if swap == "part":
                link.unlink()
                link.symlink_to(elsewhere / "victim")
            else:
                link.rename(tmp_path / "moved")
                link.symlink_to(elsewhere)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_after_planting)
    message = f"{link} is a symbolic link (to {elsewhere}"
    if swap == "part":
        with pytest.raises(DownloadError, match=re.escape(message)):
            release.run("00")
    else:
        assert release.run("00")[0].startswith(message)
    assert [p.name for p in elsewhere.iterdir()] == ["victim"]
    assert (elsewhere / "victim").read_bytes() == b"precious"


@pytest.mark.parametrize("name", ["../escape-00.tar", "nested/escape-00.tar", ".hidden-00.tar"])
def test_archive_names_that_leave_to_are_refused(release, tmp_path, capsys, name):
    data = release.archives[NAME.format("00")]
    release.server.files["escape-00.tar"] = release.server.files[".hidden-00.tar"] = data
    release.tars_list.write_text(f"{sha(data)}  {name}\n")
    assert release.cli("--keep-archives") == 1  # before: ../escape-00.tar landed beside --to
    err = capsys.readouterr().err
    assert f"tars.txt: archive name '{name}' is not a plain file name" in err
    assert release.server.requests == [] and not (tmp_path / "escape-00.tar").exists()


def endless(handler: BaseHTTPRequestHandler, data: bytes, start: int) -> None:
    reply(handler, 200, {}, data)  # no Content-Length: the body ends when the connection does
    for _ in range(256):  # 16 MiB stand for "endless", so that a broken cap cannot fill the disk
        handler.wfile.write(bytes(1 << 16))


def test_endless_body_stops_at_the_cap(release, capsys):
    archive = NAME.format("00")
    release.server.misbehave[archive] = endless  # before: 64 MiB written for 190 kB
    assert release.cli("--archives", "00", "--max-archive-gb", "0.004") == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: {release.server.url}{archive}: the server sent more than 4000000 bytes without "
        "announcing a size"
    )
    assert release.leftovers() == []  # the junk .part is deleted


def test_announced_size_above_the_cap_is_refused_unread(release):
    archive = NAME.format("00")
    data = release.archives[archive]

    def announces_64_mib(handler, data, start):  # before: all 64 MiB written, then deleted
        reply(handler, 200, {"Content-Length": 64 << 20}, data)
        for _ in range(64):
            handler.wfile.write(bytes(1 << 20))

    release.server.misbehave[archive] = announces_64_mib
    with pytest.raises(DownloadError, match=f"announces {64 << 20} bytes, more than an archive"):
        release.run("00", max_archive_bytes=4 * len(data))
    assert release.leftovers() == [] and len(release.server.requests) == 1


@pytest.mark.parametrize("body", ["longer than announced", "unannounced"])
def test_body_is_read_up_to_its_end_only(release, body):
    archive = NAME.format("00")
    data = release.archives[archive]

    def misbehave(handler, data, start):
        if body == "unannounced":  # fine within the cap: the connection's end ends it
            reply(handler, 200, {}, data)
        else:
            reply(handler, 200, {"Content-Length": len(data)}, data + bytes(1 << 20))

    release.server.misbehave[archive] = misbehave
    assert release.run("00", keep_archives=True, max_archive_bytes=2 * len(data)) == []
    assert (release.out / archive).read_bytes() == data


def trickle(handler: BaseHTTPRequestHandler, data: bytes, start: int) -> None:
    reply(handler, 200, {"Content-Length": len(data)})
    stop = time.monotonic() + 4  # then hang up, so that a broken deadline fails, not hangs
    for i in range(len(data)):  # a byte every 20 ms never trips the per-read timeout
        if time.monotonic() > stop:
            return
        handler.wfile.write(data[i : i + 1])
        handler.wfile.flush()
        time.sleep(0.02)


def test_trickling_server_hits_the_deadline_and_the_part_is_kept(release):
    archive = NAME.format("00")
    release.server.misbehave[archive] = trickle  # before: about 8 hours for this archive
    started = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        release.run("00", deadline=1.0)
    elapsed = time.monotonic() - started
    kept = (release.out / f"{archive}.part").stat().st_size
    part = release.out / f"{archive}.part"
    assert re.fullmatch(
        rf"{re.escape(release.server.url + archive)}: not finished after 1\.\d s \(--deadline 1 s "
        rf"per archive\); {kept} bytes kept in {re.escape(str(part))}, run the command again to "
        "resume or raise --deadline",
        str(caught.value),
    )
    assert 1.0 <= elapsed < 5.0 and 0 < kept < len(release.archives[archive])
    del release.server.misbehave[archive]
    release.server.requests.clear()
    assert release.run("00") == []
    assert release.server.requests == [(archive, f"bytes={kept}-")]


def test_deadline_covers_retries_of_a_stalled_server(release):
    archive = NAME.format("00")

    def stall(handler, data, start):  # headers and a little data, then silence
        reply(handler, 200, {"Content-Length": len(data)}, data[:100])
        time.sleep(3)

    release.server.misbehave[archive] = stall
    started = time.monotonic()
    with pytest.raises(DownloadError, match=f"{archive}: not finished after 1\\.\\d s "):
        release.run("00", deadline=1.0, timeout=0.3, retries=100)
    assert time.monotonic() - started < 5.0 and 2 <= len(release.server.requests) < 10


def partial_reply(first: int, last: int = -1, total: int = 0, length: int = 0) -> Callable:
    """A server that answers a range request with bytes ``first``.. of the file, mislabelled
    by the offsets ``last`` (end), ``total`` (size) and ``length`` (Content-Length)."""

    def misbehave(handler, data, start):
        if not start:
            return reply(handler, 200, {"Content-Length": len(data)}, data)
        content_range = f"bytes {first}-{len(data) + last}/{len(data) + total}"
        body = data[first:]
        headers = {"Content-Range": content_range, "Content-Length": len(body) + length}
        reply(handler, 206, headers, body[: len(body) + length])

    return misbehave


@pytest.mark.parametrize(
    "misbehave, content_range",
    [
        (partial_reply(0), "bytes 0-{n1}/{n}"),  # before: a silent restart
        (partial_reply(100), "bytes 100-{n1}/{n}"),  # before: byte 100 written at 0, bad archive
        (partial_reply(5000, total=7), "bytes 5000-{n1}/{n7}"),
        (partial_reply(5000, last=-2), "bytes 5000-{n2}/{n}"),
        (partial_reply(5000, length=-1), "bytes 5000-{n1}/{n}"),
    ],
)
def test_partial_reply_that_does_not_continue_the_part_is_refused(
    release, capsys, misbehave, content_range
):
    archive = NAME.format("01")
    data = release.archives[archive]
    content_range = content_range.format(
        n=len(data), n1=len(data) - 1, n2=len(data) - 2, n7=len(data) + 7
    )
    part = release.out / f"{archive}.part"
    release.out.mkdir()
    part.write_bytes(data[:5000])
    release.server.misbehave[archive] = misbehave
    assert release.cli("--archives", "01") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"error: {release.server.url}{archive}: asked for bytes 5000- but got Content-Range "
        f"'{content_range}' "
    )
    assert err.endswith(
        f"refused, {part} kept as it was: delete it to download from zero, or check --base-url"
    )
    assert "\n" not in err and part.read_bytes() == data[:5000]
    assert release.server.requests == [(archive, "bytes=5000-")]
    part.unlink()  # the explicit restart the message offers
    assert release.run("01") == [] and release.server.requests[-1] == (archive, None)
    release.assert_tracks_unpacked(["01/101.npy"])


def test_partial_reply_to_a_whole_file_request_is_an_error(release):
    archive = NAME.format("01")

    def always_partial(handler, data, start):
        reply(handler, 206, {"Content-Range": f"bytes 9-{len(data) - 1}/{len(data)}"}, data[9:])

    release.server.misbehave[archive] = always_partial
    with pytest.raises(
        DownloadError,
        match=r"asked for bytes 0- but got Content-Range 'bytes 9-\d+/\d+' \(Content-Length None\); refused, nothing written; check --base-url",
    ):
        release.run("01")
    assert release.leftovers() == []


@pytest.mark.parametrize(
    "flag, value",
    [("--deadline", "0"), ("--deadline", "nan"), ("--timeout", "inf"), ("--retries", "-1")]
    + [("--retries", "1.5"), ("--max-archive-gb", "-2")],
)
def test_bad_limits_are_refused_in_one_line(release, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        release.cli(flag, value)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"python -m moodtheme.data download: error: argument {flag}: ")
    assert f"'{value}'" in err[-1] and release.server.requests == []
