"""The dataset registry: name -> URL, SHA-256, size, licence, citation.

Resolution order for a file (Chapter 1 explains why data is hash-checked):

1. the offline directory named by ``LMBOOK_DATA_DIR`` (same file names and
   sub-folders as the registry), for tests, CI and workshops;
2. the local cache (``LMBOOK_CACHE_DIR``, else ``data/cache`` in a source
   checkout, else ``~/.cache/lmbook``);
3. a download from the canonical URL with a progress bar, a hash check, and an
   atomic move into the cache.

A file whose hash does not match is never used. lmbook never changes the offline
directory (it may be a whole room's shared copy): a corrupt file there is refused
with an error saying how to replace it. Only copies in lmbook's own cache are
moved aside (``NAME.corrupt``) and downloaded again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Iterable

__all__ = [
    "DataError",
    "DataFile",
    "REGISTRY",
    "cache_dir",
    "fetch",
    "offline_dir",
    "path",
    "sha256_of",
    "verify_dir",
]

ENV_OFFLINE = "LMBOOK_DATA_DIR"
ENV_CACHE = "LMBOOK_CACHE_DIR"
FETCH_COMMAND = "python -m lmbook data fetch"


class DataError(RuntimeError):
    """A dataset is missing, corrupt or unknown; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class DataFile:
    """One file of a public dataset, as the registry knows it."""

    name: str  # relative path, e.g. "multi30k/train.en.gz"
    url: str
    sha256: str
    size: int
    dataset: str
    description: str
    licence: str
    citation: str
    member: str | None = None  # for files inside a zip archive at ``url``


_M30K = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
_M30K_CITE = (
    "Elliott, Frank, Sima'an and Specia (2016). Multi30K: Multilingual "
    "English-German Image Descriptions. Proceedings of the 5th Workshop on Vision and Language."
)
_M30K_LICENCE = "see github.com/multi30k/dataset (Flickr30k captions; research use)"
_SENT_URL = "https://archive.ics.uci.edu/static/public/331/sentiment+labelled+sentences.zip"
_SENT_CITE = (
    "Kotzias, Denil, de Freitas and Smyth (2015). From Group to Individual Labels "
    "using Deep Features. KDD 2015. UCI Machine Learning Repository."
)


def _entries() -> Iterable[DataFile]:
    yield DataFile(
        name="tinyshakespeare.txt",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        size=1_115_394,
        dataset="tinyshakespeare",
        description="Tiny Shakespeare: 40,000 lines of Shakespeare's plays (the char-rnn corpus)",
        licence="public domain text",
        citation="Karpathy (2015). The Unreasonable Effectiveness of Recurrent Neural Networks (char-rnn).",
    )
    m30k = {
        "train.de.gz": ("726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6", 637_044, "29,000 German training captions"),
        "train.en.gz": ("d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f", 568_929, "29,000 English training captions"),
        "val.de.gz": ("f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a", 24_681, "1,014 German validation captions"),
        "val.en.gz": ("14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28", 21_650, "1,014 English validation captions"),
        "test_2016_flickr.de.gz": ("9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8", 22_890, "1,000 German test captions"),
        "test_2016_flickr.en.gz": ("611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9", 21_077, "1,000 English test captions"),
    }
    for fname, (digest, size, desc) in m30k.items():
        yield DataFile(
            name=f"multi30k/{fname}",
            url=_M30K + fname,
            sha256=digest,
            size=size,
            dataset="multi30k",
            description=f"Multi30k task 1: {desc}",
            licence=_M30K_LICENCE,
            citation=_M30K_CITE,
        )
    sentiment = {
        "amazon_cells_labelled.txt": ("47003fc0a0d4840b00e96e715b6189bad09e7443a3da41c4cbe12ffc79f86ae3", 58_226, "product reviews"),
        "imdb_labelled.txt": ("aef2e49e3da25714d61175e3a6e68eeef74a20a2f914318dc3be9947ea86512d", 85_285, "movie reviews"),
        "yelp_labelled.txt": ("c76468b7b5c6e56a0804d728345c5f84aa2142ddb214420f61cc9cfd4c00d2ea", 61_320, "restaurant reviews"),
    }
    for fname, (digest, size, desc) in sentiment.items():
        yield DataFile(
            name=f"sentiment_labelled_sentences/{fname}",
            url=_SENT_URL,
            sha256=digest,
            size=size,
            dataset="sentiment_labelled_sentences",
            description=f"1,000 labelled sentences from {desc} (sentence<TAB>0/1)",
            licence="CC BY 4.0",
            citation=_SENT_CITE,
            member=f"sentiment labelled sentences/{fname}",
        )


REGISTRY: dict[str, DataFile] = {f.name: f for f in _entries()}
DATASETS: dict[str, list[DataFile]] = {}
for _f in REGISTRY.values():
    DATASETS.setdefault(_f.dataset, []).append(_f)


def lookup(name: str) -> DataFile:
    """The registry entry for a file name; a clear error for unknown names."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise DataError(f"unknown data file {name!r}; the registry knows: {known}") from None


def files_of(names: Iterable[str] | None = None) -> list[DataFile]:
    """Registry entries for dataset names or file names (all when ``names`` is empty)."""
    names = list(names or [])
    if not names:
        return list(REGISTRY.values())
    out: list[DataFile] = []
    for n in names:
        if n in DATASETS:
            out.extend(DATASETS[n])
        elif n in REGISTRY:
            out.append(REGISTRY[n])
        else:
            known = ", ".join(sorted(set(DATASETS) | set(REGISTRY)))
            raise DataError(f"unknown dataset or file {n!r}; choose from: {known}")
    return out


def sha256_of(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def offline_dir() -> Path | None:
    """The offline directory from ``LMBOOK_DATA_DIR``, or None when unset.

    Raises ``DataError`` when the variable names something that is not a folder
    (a typo would otherwise silently fall back to downloading).
    """
    value = os.environ.get(ENV_OFFLINE)
    if not value:
        return None
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"${ENV_OFFLINE} is set to {value!r}, which is not a folder. Point it at the folder holding the "
            f"book's data (made with `{FETCH_COMMAND} --to DIR`), or unset it to use the cache and downloads."
        )
    return folder


def cache_dir() -> Path:
    """Where downloads are cached (created on demand)."""
    value = os.environ.get(ENV_CACHE)
    if value:
        return Path(value).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists() and (repo / "data").is_dir():
        return repo / "data" / "cache"
    return Path.home() / ".cache" / "lmbook"


def _quarantine(file: Path) -> Path | None:
    """Move a corrupt file aside so it is never picked up again (None if read-only)."""
    bad = file.with_name(file.name + ".corrupt")
    try:
        os.replace(file, bad)
        return bad
    except OSError:
        return None


def _check(entry: DataFile, file: Path, *, ours: bool) -> None:
    """Raise ``DataError`` unless ``file`` has the registry's hash; move it aside only if it is ``ours`` (a cache copy)."""
    digest = sha256_of(file)
    if digest == entry.sha256:
        return
    mismatch = (f"{file} does not match the registry (sha256 {digest[:12]}..., expected "
                f"{entry.sha256[:12]}...): the file is corrupt or a different version")
    if not ours:
        raise DataError(
            f"{mismatch}. lmbook does not change ${ENV_OFFLINE}: replace that file with a verified copy "
            f"(`{FETCH_COMMAND} {entry.dataset} --to DIR` on a machine with internet, then "
            f"`python -m lmbook data verify DIR`), or unset ${ENV_OFFLINE} to download it into the cache."
        )
    moved = _quarantine(file)
    where = f"it was moved to {moved}" if moved else "it was left in place (read-only)"
    raise DataError(f"{mismatch}; {where}. Fetch a fresh copy with `{FETCH_COMMAND} {entry.dataset}`.")


def _download(url: str, dest: Path, expected_size: int | None, progress: bool) -> None:
    """Download ``url`` to ``dest`` atomically (temp file in the same folder, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or expected_size
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}")
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


Downloader = Callable[[str, Path, "int | None", bool], None]


def fetch(
    entry: DataFile,
    to: Path | None = None,
    *,
    progress: bool = True,
    downloader: Downloader | None = None,
) -> Path:
    """Download one registry file into ``to`` (the cache by default), verified.

    Nothing partial or corrupt is ever left at the final path. Network errors
    become a ``DataError`` that names ``LMBOOK_DATA_DIR``.
    """
    target_root = to or cache_dir()
    dest = target_root / entry.name
    if dest.exists():
        try:
            _check(entry, dest, ours=True)
            return dest
        except DataError:
            pass  # moved aside: download again
    offline = offline_dir()
    if offline is not None and (offline / entry.name).exists() and to is not None:
        # A local mirror (e.g. a workshop USB stick): copy and verify, no network.
        _copy_atomic(offline / entry.name, dest)
        _check(entry, dest, ours=True)
        return dest
    download = downloader or _download
    source = entry.url
    try:
        if entry.member is None:
            download(source, dest, entry.size, progress)
        else:
            archive = target_root / ".archives" / Path(source).name
            if not archive.exists():
                download(source, archive, None, progress)
            try:
                _extract_member(archive, entry.member, dest)
                _check(entry, dest, ours=True)
            except (DataError, zipfile.BadZipFile):
                archive.unlink(missing_ok=True)  # a bad archive must not be reused
                raise
    except DataError:
        raise
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataError(f"{source} is not the expected zip archive ({err}); fetch again later") from err
    except Exception as err:  # network, HTTP or disk errors
        # ``from None``: the message carries the cause; a reader offline sees this error, not
        # the urllib/socket traceback that led to it
        raise DataError(
            f"could not download {entry.name} from {source} ({type(err).__name__}: {err}). "
            f"Offline? Point ${ENV_OFFLINE} at a folder holding a copy "
            f"(e.g. export {ENV_OFFLINE}=/path/to/shared/data), or run "
            f"`{FETCH_COMMAND} {entry.dataset}` on a machine with internet access."
        ) from None
    _check(entry, dest, ours=True)
    return dest


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    """Extract one named member of a zip safely (no path from the archive is trusted)."""
    with zipfile.ZipFile(archive) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise DataError(f"{archive} has no member {member!r}; delete it and fetch again") from None
        data = zf.read(info)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(io.BytesIO(data), out)
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def path(name: str, *, download: bool = True, progress: bool = True) -> Path:
    """The verified local path of a registry file (offline dir, cache, or download).

    Args:
        name: the file's registry name, e.g. ``"tinyshakespeare.txt"`` or
            ``"multi30k/train.en.gz"``.
        download: when False, raise instead of downloading.
    """
    entry = lookup(name)
    offline = offline_dir()
    if offline is not None:
        candidate = offline / entry.name
        if candidate.exists():
            _check(entry, candidate, ours=False)
            return candidate
    cached = cache_dir() / entry.name
    if cached.exists():
        try:
            _check(entry, cached, ours=True)
            return cached
        except DataError:
            if not download:
                raise
    if not download:
        where = f"${ENV_OFFLINE}={offline}" if offline else f"${ENV_OFFLINE} is not set"
        raise DataError(
            f"{entry.name} is not available offline ({where}; cache {cache_dir()}). "
            f"Set {ENV_OFFLINE} to a folder with the book's data, or run `{FETCH_COMMAND} {entry.dataset}`."
        )
    return fetch(entry, progress=progress)


def verify_dir(root: Path) -> tuple[list[str], list[str], list[str]]:
    """Check every registry file found under ``root``.

    Returns (good, bad, missing) lists of registry names; nothing is moved.
    """
    good, bad, missing = [], [], []
    for entry in REGISTRY.values():
        f = root / entry.name
        if not f.exists():
            missing.append(entry.name)
        elif sha256_of(f) == entry.sha256:
            good.append(entry.name)
        else:
            bad.append(entry.name)
    return good, bad, missing
