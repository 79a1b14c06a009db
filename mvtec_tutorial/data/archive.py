"""The official MVTec AD archive: download (resumable), verify (SHA-256) and extract categories."""
from __future__ import annotations

import hashlib
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from mvtec_tutorial.data.mvtec import CATEGORIES, category_info
from mvtec_tutorial.settings import user_path

# The official archive (all 15 categories, 4.9 GiB). Mirrors have moved before: when this URL
# rots, download by hand from MVTEC_HOMEPAGE and pass archive=<path>.
MVTEC_URL = ("https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/"
             "download/420938113-1629960298/mvtec_anomaly_detection.tar.xz")
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
MVTEC_HOMEPAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
_CHUNK = 1 << 20


def sha256_of(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(root: str | Path, categories: Sequence[str] | None = None, *, archive: str | Path | None = None,
             url: str = MVTEC_URL, sha256: str = MVTEC_SHA256) -> Path:
    """Download (or take) the official MVTec AD archive, verify it and extract categories.

    Each category is extracted into a scratch folder inside ``root`` and moved into place only
    when complete, so an interrupted run (Ctrl-C, a full disk) leaves no partial category that
    :class:`~mvtec_tutorial.data.MVTecAD` would load. A category already in ``root`` is left as
    it is (the run says so); nothing of yours is overwritten, renamed or deleted.

    Parameters
    ----------
    root : str or Path
        Destination; categories end up in ``<root>/<category>``.
    categories : str or sequence of str, optional
        Extract only these (one name may be a string); default all 15.
    archive : str or Path, optional
        A ``mvtec_anomaly_detection.tar.xz`` you downloaded by hand; nothing is fetched.
    url, sha256 : str
        Where to fetch from and the digest the archive must have (hex, any case).

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    ValueError
        If the archive's SHA-256 differs (nothing is extracted; an archive this call downloaded
        is kept aside as ``*.corrupt``, yours is left as it is), ``sha256`` is not 64 hex digits,
        ``categories`` is empty or a category is unknown.
    OSError
        If the download fails; the message says how to download by hand. A partial
        download is kept and resumed on the next call.
    FileNotFoundError
        If ``archive`` is not a regular file, or the archive lacks a requested category.
    RuntimeError
        Before anything is fetched, if this Python lacks ``tarfile``'s extraction filters
        (Python 3.11.4 or later has them), which keep the archive from writing outside ``root``.
    """
    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError(f"download needs Python 3.11.4 or later to extract the archive safely "
                           f"(tarfile's filter='data'); this is Python {sys.version.split()[0]}. "
                           "Install a newer Python, then rebuild the environment: make distclean install")
    root = user_path(root)
    if isinstance(categories, str):
        categories = [categories]  # one name, not a sequence of letters
    categories = list(CATEGORIES if categories is None else categories)
    if not categories:
        raise ValueError("categories is empty, so there is nothing to extract; pass None for all 15 categories "
                         "or names such as ['bottle']")
    for name in categories:
        category_info(name)
    expected = sha256.strip().lower()
    if len(expected) != 64 or set(expected) - set("0123456789abcdef"):
        raise ValueError(f"sha256={sha256!r} is not a SHA-256 digest (64 hexadecimal digits); pass the digest "
                         f"the archive's source publishes (the official one is MVTEC_SHA256)")
    present = [name for name in categories if (root / name).exists()]
    if present:
        print(f"already in {root}, left as they are: {', '.join(present)}")
    missing = [name for name in categories if name not in present]
    if not missing:
        return root
    root.mkdir(parents=True, exist_ok=True)
    fetched = archive is None and not (root / Path(url).name).exists()
    archive = root / Path(url).name if archive is None else user_path(archive)
    if fetched:
        _fetch(url, archive)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} is not a regular file; pass the path of the downloaded "
                                "mvtec_anomaly_detection.tar.xz")
    actual = sha256_of(archive)
    if actual != expected:
        kept = "it is left as it is"
        if fetched:  # a file this call wrote; moved aside so that the next call downloads afresh
            corrupt = archive.with_name(archive.name + ".corrupt")
            archive.replace(corrupt)
            kept = f"moved it to {corrupt}"
        raise ValueError(f"{archive} has SHA-256 {actual}, expected {expected}; {kept}. Delete it and download "
                         f"again, or fetch it by hand from {MVTEC_HOMEPAGE}.")
    _extract(archive, root, missing)
    return root


def _fetch(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` via a ``.part`` file that a later call resumes."""
    partial = destination.with_name(destination.name + ".part")
    start = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if start and response.status != 206:  # the server ignored the range: start over
                start = 0
            total = int(response.headers.get("Content-Length", 0)) + start
            with open(partial, "ab" if start else "wb") as file, tqdm(
                total=total or None, initial=start, unit="B", unit_scale=True, desc=destination.name
            ) as bar:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    file.write(block)
                    bar.update(len(block))
    except OSError as error:
        # 416 Range Not Satisfiable: the .part already holds every byte (the previous call was cut
        # after the last block). Take it as complete; download() then checks its SHA-256.
        complete = start and isinstance(error, urllib.error.HTTPError) and error.code == 416
        if not complete:
            raise OSError(
                f"downloading {url} failed ({error}). The partial file {partial} is kept and the next call "
                f"resumes it. To download by hand, get mvtec_anomaly_detection.tar.xz from {MVTEC_HOMEPAGE} "
                "and call download(root, archive='path/to/mvtec_anomaly_detection.tar.xz')."
            ) from error
    partial.replace(destination)


def _extract(archive: Path, root: Path, categories: Sequence[str]) -> None:
    """Extract ``categories`` into a scratch folder in ``root``, then move each complete one into place."""
    wanted = tuple(categories)
    scratch = Path(tempfile.mkdtemp(prefix=".extracting-", dir=root))  # same disk: the move is a rename
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if Path(m.name).parts and Path(m.name).parts[0] in wanted]
            for member in tqdm(members, desc="extracting", unit="file"):
                tar.extract(member, scratch, filter="data")
        missing = [name for name in wanted if not (scratch / name / "train").is_dir()]
        if missing:
            raise FileNotFoundError(f"{archive} held no folder for {', '.join(missing)}; is it the MVTec AD archive?")
        for name in wanted:
            (scratch / name).rename(root / name)
    finally:
        shutil.rmtree(scratch)  # this call's own folder: what is left there is incomplete
