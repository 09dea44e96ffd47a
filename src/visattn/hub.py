"""Official weights by name: where each variant's checkpoint is published, and fetching it into a cache.

Nothing is downloaded unless weights are asked for by name (``create_model(name, pretrained=True)``, ``visattn train
--pretrained NAME``, timm's ``pretrained=True`` for ``visattn_<name>``). A fetch goes to the cache folder (torch hub's
``<TORCH_HOME>/hub/checkpoints``, or ``VISATTN_CACHE_DIR``), with a progress line on stderr, through a temporary file
renamed only when every announced byte arrived, under a lock that makes concurrent first uses download once; the
size and SHA-256 are checked where they are known
(a mismatching file is kept beside the cache as ``<name>.rejected`` for inspection, never used); a cached file is
reused. Loading is always strict (:func:`visattn.load_official`).

``VISATTN_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) makes a missing file an immediate error naming the file to place
in the cache; ``VISATTN_WEIGHTS_MIRROR=<base URL>`` fetches ``<base URL>/<file>`` instead of the official location
(a company mirror, or a local server).

Locations come from the official READMEs (ziplab/LITv2 ``classification/README.md``, sail-sg/volo ``README.md``,
JIAOJIAYUASD/dilateformer ``README.md``, qhfan/CloFormer ``README.md``); timm's published copies of VOLO (the same
weights) are listed as alternatives. The authors publish no digests, so none is pinned here.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Weights:
    """Where a variant's official checkpoint is published (``url``: a direct file), or why it cannot be fetched."""

    variant: str
    file: str | None  # the cache file name
    url: str | None  # None: nothing to fetch (see ``page`` / ``note``)
    top1: float | None  # ImageNet-1k top-1 reported with these weights
    license: str
    source: str  # who publishes it, and where that is stated
    page: str | None = None  # a page to download from by hand (a browser is needed)
    sha256: str | None = None  # checked when known
    size: int | None = None  # bytes, checked when known
    alternatives: tuple[str, ...] = ()  # other published copies of the same weights
    note: str = ""


_LIT = "https://github.com/ziplab/LITv2/releases/download/v1.0/"
_LIT_SOURCE = "ziplab/LITv2 release v1.0 (classification/README.md)"
_VOLO = "https://github.com/sail-sg/volo/releases/download/volo_1/"
_VOLO_SOURCE = "sail-sg/volo release volo_1 (README.md)"
_DILATE_PAGES = ("https://drive.google.com/drive/folders/1r8PDAQyccI6lKMIuaejin-AI1VW16Fvb",
                 "https://pan.baidu.com/s/1DTKScF5G0Cbq-jaJrxeb4A (extraction code q4mu)")


def _volo(variant: str, file: str, top1: float) -> Weights:
    timm_name = variant if variant.count("_") == 2 else f"{variant}_224"
    return Weights(variant, file, _VOLO + file, top1, "Apache-2.0 (commercial use: contact the authors)",
                   _VOLO_SOURCE, alternatives=(f"timm: timm/{timm_name}.sail_in1k (Hugging Face Hub), same weights",))


def _dilate(variant: str, top1: float) -> Weights:
    return Weights(variant, None, None, top1, "not stated by the repository", "JIAOJIAYUASD/dilateformer README.md",
                   page=" or ".join(_DILATE_PAGES),
                   note=f"published only in a Google Drive folder and on Baidu Netdisk (pages that need a browser): "
                        f"download the {variant} checkpoint from {_DILATE_PAGES[0]} (or {_DILATE_PAGES[1]}) and pass "
                        f"its path: create_model({variant!r}, pretrained='path/to/file')")


def _clo(variant: str, top1: float) -> Weights:
    return Weights(variant, None, None, top1, "MIT (code)", "qhfan/CloFormer README.md",
                   note="the authors have not published CloFormer checkpoints (the official README says pretrained "
                        "models 'will come soon'); train one, or pass a checkpoint you have: "
                        f"create_model({variant!r}, pretrained='path/to/file')")


WEIGHTS: dict[str, Weights] = {w.variant: w for w in (
    Weights("litv2_s", "litv2_s.pth", _LIT + "litv2_s.pth", 82.0, "Apache-2.0", _LIT_SOURCE),
    Weights("litv2_m", "litv2_m.pth", _LIT + "litv2_m.pth", 83.3, "Apache-2.0", _LIT_SOURCE),
    Weights("litv2_b", "litv2_b.pth", _LIT + "litv2_b.pth", 83.6, "Apache-2.0", _LIT_SOURCE,
            alternatives=(f"fine-tuned at 384 (84.7): {_LIT}litv2_b_384.pth, pass it as a path",)),
    _dilate("dilateformer_tiny", 82.1), _dilate("dilateformer_small", 83.3), _dilate("dilateformer_base", 84.9),
    _volo("volo_d1", "d1_224_84.2.pth.tar", 84.2), _volo("volo_d1_384", "d1_384_85.2.pth.tar", 85.2),
    _volo("volo_d2", "d2_224_85.2.pth.tar", 85.2), _volo("volo_d2_384", "d2_384_86.0.pth.tar", 86.0),
    _volo("volo_d3", "d3_224_85.4.pth.tar", 85.4), _volo("volo_d3_448", "d3_448_86.3.pth.tar", 86.3),
    _volo("volo_d4", "d4_224_85.7.pth.tar", 85.7), _volo("volo_d4_448", "d4_448_86.79.pth.tar", 86.79),
    _volo("volo_d5", "d5_224_86.10.pth.tar", 86.1), _volo("volo_d5_448", "d5_448_87.0.pth.tar", 87.0),
    _volo("volo_d5_512", "d5_512_87.07.pth.tar", 87.07),
    _clo("cloformer_xxs", 77.0), _clo("cloformer_xs", 79.8), _clo("cloformer_s", 81.6),
)}


def weights_for(variant: str) -> Weights:
    if variant not in WEIGHTS:
        raise ValueError(f"no official weights are listed for {variant!r}; variants with a table entry: "
                         f"{', '.join(sorted(WEIGHTS))} (visattn weights prints the table)")
    return WEIGHTS[variant]


def cache_dir() -> Path:
    """``VISATTN_CACHE_DIR``, else torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``)."""
    override = os.environ.get("VISATTN_CACHE_DIR")
    return Path(override) if override else Path(torch.hub.get_dir()) / "checkpoints"


def offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("VISATTN_OFFLINE", "HF_HUB_OFFLINE"))


def cached(variant: str) -> Path | None:
    """The cached file of ``variant`` if it is there."""
    w = weights_for(variant)
    path = cache_dir() / w.file if w.file else None
    return path if path is not None and path.is_file() else None


def source_url(w: Weights) -> str:
    mirror = os.environ.get("VISATTN_WEIGHTS_MIRROR")
    return f"{mirror.rstrip('/')}/{w.file}" if mirror else w.url


def _check(path: Path, w: Weights) -> str | None:
    """None if ``path`` has the known size and digest, else what differs."""
    size = path.stat().st_size
    if w.size is not None and size != w.size:
        return f"{size} bytes, {w.size} expected"
    if w.sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != w.sha256:
            return f"SHA-256 {digest.hexdigest()}, {w.sha256} expected"
    return None


def _download(url: str, dst: Path, progress: bool) -> None:
    """``url`` to ``dst`` through a temporary file renamed only when every byte the server announced arrived (a
    connection that closes early fails here: nothing partial is ever renamed into place)."""
    request = urllib.request.Request(url, headers={"User-Agent": "visattn"})
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            got = 0
            while chunk := response.read(1 << 20):
                f.write(chunk)
                got += len(chunk)
                if progress:
                    shown = f"{100 * got / total:.0f}% of {total / 2 ** 20:.1f} MB" if total else f"{got >> 20} MB"
                    sys.stderr.write(f"\rfetching {dst.name.removesuffix('.partial')}: {shown}")
            if progress:
                sys.stderr.write("\n")
            if total is not None and got != total:
                raise http.client.IncompleteRead(b"", total - got)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock beside ``path``: concurrent first uses download once, the others wait and reuse. POSIX
    ``flock``, or ``msvcrt.locking`` on Windows (imported here, so that ``import visattn`` needs neither)."""
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        try:
            import fcntl
        except ImportError:  # Windows
            fcntl = None
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            import msvcrt

            lock.seek(0)
            while True:  # LK_LOCK gives up after 10 tries of 1 s: a long download elsewhere keeps this one waiting
                try:
                    msvcrt.locking(lock.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    continue
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
            else:
                lock.seek(0)
                msvcrt.locking(lock.fileno(), msvcrt.LK_UNLCK, 1)


def fetch(variant: str, progress: bool = True) -> Path:
    """The official checkpoint of ``variant`` in the cache, downloaded first if it is not there (see the module)."""
    w = weights_for(variant)
    if w.url is None:
        raise ValueError(f"{variant}: {w.note}")
    folder = cache_dir()
    path = folder / w.file
    if path.is_file():
        problem = _check(path, w)
        if problem is None:
            return path
        raise ValueError(f"the cached {path} does not match the published file ({problem}); delete it to download "
                         f"again")
    if offline():
        raise FileNotFoundError(f"{variant}: {w.file} is not in the cache and downloads are off (VISATTN_OFFLINE / "
                                f"HF_HUB_OFFLINE); place {w.file} (from {w.url}) in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        if path.is_file():  # another process finished it while this one waited
            return fetch(variant, progress)
        url = source_url(w)
        partial = path.with_name(path.name + ".partial")
        try:
            _download(url, partial, progress)
        except urllib.error.HTTPError as err:
            raise ValueError(f"{variant}: {url} answered HTTP {err.code} ({err.reason}); the file may have moved: "
                             f"see {w.source}, download it by hand and pass its path") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            partial.unlink(missing_ok=True)
            reason = getattr(err, "reason", err)
            raise ValueError(f"{variant}: could not download {url} ({reason}); nothing was kept. Retry, or place "
                             f"{w.file} in {folder} yourself") from None
        problem = _check(partial, w)
        if problem is not None:
            rejected = path.with_name(path.name + ".rejected")
            os.replace(partial, rejected)
            raise ValueError(f"{variant}: the downloaded file does not match the published one ({problem}); it is "
                             f"kept for inspection as {rejected} and not used")
        os.replace(partial, path)
    return path
