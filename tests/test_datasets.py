"""lmbook.data.datasets: resolution order, hash checks, atomic downloads, errors, CLI."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import threading
import zipfile
from pathlib import Path

import pytest

from lmbook.__main__ import main as cli
from lmbook.data import datasets as ds

CONTENT = b"to be, or not to be\n" * 50


def _entry(name="toy/toy.txt", content=CONTENT, url="http://127.0.0.1:1/toy.txt", member=None):
    return ds.DataFile(
        name=name, url=url, sha256=hashlib.sha256(content).hexdigest(), size=len(content),
        dataset="toy", description="a toy file", licence="CC0", citation="nobody", member=member,
    )


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """A registry holding one toy file; an empty cache and no offline dir."""
    entry = _entry()
    monkeypatch.setitem(ds.REGISTRY, entry.name, entry)
    monkeypatch.setitem(ds.DATASETS, "toy", [entry])
    monkeypatch.setenv(ds.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(ds.ENV_OFFLINE, raising=False)
    return entry


class _Server:
    """A loopback HTTP server serving given bytes per path (or dropping the connection)."""

    def __init__(self, routes: dict[str, bytes | None]):
        routes_ = routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = routes_.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _no_partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")]


def test_offline_dir_is_used_first(toy, tmp_path, monkeypatch):
    offline = tmp_path / "offline"
    (offline / "toy").mkdir(parents=True)
    (offline / "toy" / "toy.txt").write_bytes(CONTENT)
    monkeypatch.setenv(ds.ENV_OFFLINE, str(offline))
    assert ds.path(toy.name) == offline / "toy" / "toy.txt"


def test_missing_offline_without_download_names_env_var_and_fetch(toy, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(ds.ENV_OFFLINE, str(tmp_path / "empty"))
    with pytest.raises(ds.DataError, match=r"LMBOOK_DATA_DIR.*python -m lmbook data fetch toy"):
        ds.path(toy.name, download=False)


def test_missing_offline_and_no_network_names_env_var(toy, tmp_path):
    with pytest.raises(ds.DataError, match="LMBOOK_DATA_DIR") as err:
        ds.path(toy.name, progress=False)  # the toy URL points at a closed port
    # the DataError is what a reader sees first: no chained network traceback before it
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert "ConnectionRefusedError" in str(err.value) or "URLError" in str(err.value)
    assert not (tmp_path / "cache" / "toy" / "toy.txt").exists()
    assert _no_partials(tmp_path) == []


def test_offline_dir_that_does_not_exist_says_so(toy, tmp_path, monkeypatch):
    monkeypatch.setenv(ds.ENV_OFFLINE, str(tmp_path / "typo"))
    with pytest.raises(ds.DataError, match=r"LMBOOK_DATA_DIR is set to '.*typo', which is not a folder"):
        ds.path(toy.name)
    assert cli(["data", "verify"]) == 2 and cli(["data", "list"]) == 2


def test_unknown_name_lists_the_registry():
    with pytest.raises(ds.DataError, match="unknown data file 'nope.txt'.*tinyshakespeare.txt"):
        ds.path("nope.txt")
    with pytest.raises(ds.DataError, match="unknown dataset or file 'nope'"):
        ds.files_of(["nope"])


@pytest.mark.parametrize("download", [False, True])
def test_corrupt_offline_file_is_refused_and_left_untouched(toy, tmp_path, monkeypatch, download):
    offline = tmp_path / "offline"
    (offline / "toy").mkdir(parents=True)
    bad = CONTENT[:-1] + b"!"
    (offline / "toy" / "toy.txt").write_bytes(bad)  # a writable folder: lmbook still must not touch it
    monkeypatch.setenv(ds.ENV_OFFLINE, str(offline))
    for _ in range(2):  # refused the same way every time: nothing was renamed
        with pytest.raises(ds.DataError, match=r"does not match the registry.*does not change \$LMBOOK_DATA_DIR"):
            ds.path(toy.name, download=download, progress=False)
    assert sorted(p.name for p in offline.rglob("*")) == ["toy", "toy.txt"]
    assert (offline / "toy" / "toy.txt").read_bytes() == bad


def test_corrupt_cached_file_is_moved_aside_and_never_reused(toy, tmp_path):
    cached = tmp_path / "cache" / "toy" / "toy.txt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"garbage")
    with pytest.raises(ds.DataError, match="does not match the registry.*moved to"):
        ds.path(toy.name, download=False)
    with pytest.raises(ds.DataError, match="not available offline"):
        ds.path(toy.name, download=False)  # the bad copy is not picked up again
    assert not cached.exists()
    assert (cached.parent / "toy.txt.corrupt").exists()


def test_download_verifies_and_moves_into_place(toy, tmp_path, monkeypatch):
    with _Server({"/toy.txt": CONTENT}) as server:
        entry = _entry(url=server.url + "/toy.txt")
        monkeypatch.setitem(ds.REGISTRY, entry.name, entry)
        got = ds.path(entry.name, progress=False)
    assert got == tmp_path / "cache" / "toy" / "toy.txt"
    assert got.read_bytes() == CONTENT
    assert _no_partials(tmp_path) == []


def test_download_of_wrong_bytes_leaves_no_usable_file(toy, tmp_path, monkeypatch):
    with _Server({"/toy.txt": b"something else entirely"}) as server:
        entry = _entry(url=server.url + "/toy.txt")
        monkeypatch.setitem(ds.REGISTRY, entry.name, entry)
        with pytest.raises(ds.DataError, match="does not match the registry"):
            ds.path(entry.name, progress=False)
    assert not (tmp_path / "cache" / "toy" / "toy.txt").exists()
    assert _no_partials(tmp_path) == []


def test_interrupted_download_leaves_no_partial_file(toy, tmp_path):
    dest = tmp_path / "cache" / "x.bin"

    class Boom(Exception):
        pass

    def exploding_urlopen(*a, **k):
        raise Boom("connection reset")

    import urllib.request

    orig = urllib.request.urlopen
    urllib.request.urlopen = exploding_urlopen
    try:
        with pytest.raises(Boom):
            ds._download("http://127.0.0.1:1/x", dest, 10, False)
    finally:
        urllib.request.urlopen = orig
    assert not dest.exists()
    assert _no_partials(tmp_path) == []


def test_zip_member_is_extracted_and_verified(toy, tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("folder/toy.txt", CONTENT)
        zf.writestr("../evil.txt", b"never extracted")
    with _Server({"/bundle.zip": buf.getvalue()}) as server:
        entry = _entry(name="toy/inner.txt", url=server.url + "/bundle.zip", member="folder/toy.txt")
        monkeypatch.setitem(ds.REGISTRY, entry.name, entry)
        got = ds.path(entry.name, progress=False)
    assert got.read_bytes() == CONTENT
    assert not (tmp_path / "evil.txt").exists()


def test_fetch_to_folder_copies_from_a_local_mirror(toy, tmp_path, monkeypatch):
    mirror = tmp_path / "usb"
    (mirror / "toy").mkdir(parents=True)
    (mirror / "toy" / "toy.txt").write_bytes(CONTENT)
    monkeypatch.setenv(ds.ENV_OFFLINE, str(mirror))
    assert cli(["data", "fetch", "toy", "--to", str(tmp_path / "copy"), "--quiet"]) == 0
    assert (tmp_path / "copy" / "toy" / "toy.txt").read_bytes() == CONTENT


def test_cli_fetch_failure_exits_nonzero_and_mentions_env_var(toy, tmp_path, capsys):
    assert cli(["data", "fetch", "toy", "--to", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "LMBOOK_DATA_DIR" in err
    assert not list((tmp_path).rglob("toy.txt"))
    assert _no_partials(tmp_path) == []


def test_cli_verify_fails_on_missing_files_unless_partial(toy, tmp_path, monkeypatch, capsys):
    other = _entry(name="toy/other.txt", content=b"other\n")
    monkeypatch.setitem(ds.REGISTRY, other.name, other)
    folder = tmp_path / "copy"
    (folder / "toy").mkdir(parents=True)
    (folder / "toy" / "toy.txt").write_bytes(CONTENT)
    assert cli(["data", "verify", str(folder)]) == 1
    assert "missing  toy/other.txt" in capsys.readouterr().out
    assert cli(["data", "verify", "--partial", str(folder)]) == 0
    (folder / "toy" / "toy.txt").write_bytes(b"tampered")
    assert cli(["data", "verify", "--partial", str(folder)]) == 1  # corrupt always fails


def test_cli_verify_on_a_folder_not_fetched_yet_says_to_fetch(toy, tmp_path, capsys):
    assert cli(["data", "verify", str(tmp_path / "lmbook-data")]) == 2
    assert "python -m lmbook data fetch --to" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli(["data", "verify", str(tmp_path / "empty")]) == 1
    assert "python -m lmbook data fetch --to" in capsys.readouterr().err


def test_cli_verify_names_the_corrupt_file(toy, tmp_path, capsys):
    folder = tmp_path / "copy"
    (folder / "toy").mkdir(parents=True)
    (folder / "toy" / "toy.txt").write_bytes(CONTENT)
    assert cli(["data", "verify", "--partial", str(folder)]) == 0  # the real registry's files are not there
    (folder / "toy" / "toy.txt").write_bytes(b"tampered")
    assert cli(["data", "verify", "--partial", str(folder)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"CORRUPT\s+\S*toy/toy.txt", out)


def test_cli_list_and_unknown_dataset(toy, capsys):
    assert cli(["data", "list"]) == 0
    assert "toy/toy.txt" in capsys.readouterr().out
    assert cli(["data", "fetch", "nope"]) == 2


def test_registry_matches_the_data_cards_and_the_shared_readme():
    root = Path(__file__).resolve().parents[1]
    cards = (root / "data" / "README.md").read_text()
    for entry in ds.REGISTRY.values():
        assert entry.name in cards, f"data/README.md has no card line for {entry.name}"
        assert entry.sha256 in cards, f"data/README.md shows a different hash for {entry.name}"
    shared = root.parent / "shared" / "data" / "README.md"
    if shared.exists():
        digests = set(re.findall(r"[0-9a-f]{64}", shared.read_text()))
        assert {e.sha256 for e in ds.REGISTRY.values()} <= digests


def test_data_cards_name_the_chapters_that_load_each_data_set():
    root = Path(__file__).resolve().parents[1]
    cards = (root / "data" / "README.md").read_text()
    loads = {"tinyshakespeare": r'load_text\(\\?"tinyshakespeare', "multi30k": r"multi30k\(\\?\"",
             "sentiment_labelled_sentences": r"data\.sentiment\("}
    for dataset, pattern in loads.items():
        used = {int(p.name[:2]) for p in (root / "chapters").glob("[0-9]*.ipynb") if re.search(pattern, p.read_text())}
        card = cards.split(f"## {dataset}\n", 1)[1].split("\n## ", 1)[0]
        line = re.search(r"\*\*Used in:\*\*([^.]*)", card).group(1)  # up to the first full stop
        listed = {int(n) for n in re.findall(r"\b(\d+)\b", re.sub(r"\([^)]*\)", "", line))}
        assert listed == used, f"data/README.md: {dataset} is used in chapters {sorted(used)}, the card says {sorted(listed)}"
