"""Data registry: name, find, fetch and verify every data file tttlab uses (``tttlab/data/registry.txt``).

Files are looked up in ``TTTLAB_DATA_DIR``, ``../shared/data`` beside the repository, then the user
cache (``pooch.os_cache("tttlab")``), and used only when their SHA-256 matches; missing files are
downloaded with pooch (Uieda et al., JOSS 2020) or rebuilt by ``tttlab data prepare``.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

#: the registry ships inside the package (package data)
REGISTRY_FILE = Path(__file__).resolve().parent / "registry.txt"
#: the checkout this package runs from (editable install), or None when installed as a wheel
REPO_ROOT = next((p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file()),
                 None)
ENV = "TTTLAB_DATA_DIR"
#: pooch downloader used by fetches (None: chosen from the URL); tests replace it to stay offline
_downloader = None
#: per-process hash results, keyed by (path, size, mtime_ns): each file is hashed once per change
_verified: dict[tuple, bool] = {}


@dataclass(frozen=True)
class Entry:
    """A registered file: relative ``name``, SHA-256, size, ``kind/dataset``, licence, sources."""

    name: str
    sha256: str
    size: int
    kind: str
    licence: str
    urls: tuple[str, ...]
    recipe: str | None

    @property
    def dataset(self) -> str:
        return self.kind.split("/", 1)[1]


@lru_cache(maxsize=None)
def registry() -> dict[str, Entry]:
    """Every registered file by relative path, read from ``tttlab/data/registry.txt``."""
    entries = {}
    for line in REGISTRY_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sha, size, kind, licence, url, recipe = line.split()
            urls = () if url == "-" else tuple(url.split("|"))
            entries[name] = Entry(name, sha, int(size), kind, licence, urls,
                                  None if recipe == "-" else recipe)
    return entries


def shared_dir() -> Path | None:
    """``../shared/data`` beside the repository (the project's read-only copy of every file);
    None for an installed wheel outside a checkout (then ``TTTLAB_DATA_DIR`` or the cache)."""
    return None if REPO_ROOT is None else REPO_ROOT.parent / "shared" / "data"


def cache_dir() -> Path:
    """The user cache, ``pooch.os_cache("tttlab")`` (e.g. ``~/.cache/tttlab`` on Linux)."""
    import pooch

    return Path(pooch.os_cache("tttlab"))


def download_dir() -> Path:
    """Where fetched and prepared files go: ``TTTLAB_DATA_DIR`` when set, else the user cache."""
    return Path(os.environ[ENV]) if os.environ.get(ENV) else cache_dir()


def search_dirs() -> list[Path]:
    """Folders searched in order: ``TTTLAB_DATA_DIR`` if set, ``../shared/data``, user cache."""
    dirs = [Path(os.environ[ENV])] if os.environ.get(ENV) else []
    shared = [shared_dir()] if shared_dir() is not None else []
    return list(dict.fromkeys(dirs + shared + [cache_dir()]))


def data_dir() -> Path:
    """``TTTLAB_DATA_DIR`` when set, else ``../shared/data`` beside the repository when it exists,
    else the user cache."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    shared = shared_dir()
    return shared if shared is not None and shared.is_dir() else cache_dir()


def entry(name: str) -> Entry:
    """Registry entry of a file path or an assay short form (``dms/X`` is ``dms/X.csv.gz``)."""
    name = str(name).replace("\\", "/").strip("/")
    reg = registry()
    for candidate in (name, name + ".csv.gz"):
        if candidate in reg:
            return reg[candidate]
    close = difflib.get_close_matches(name, list(reg), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `tttlab data list --files`"
    raise ValueError(f"{name!r} is not a registered data file{hint}")


def sha256sum(file: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def matches(file: Path, item: Entry, recheck: bool = False) -> bool:
    """Whether ``file`` has the registered size and SHA-256 (cached per process; ``recheck``)."""
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns, item.sha256)
    if recheck or key not in _verified:
        ok = stat.st_size == item.size and sha256sum(file) == item.sha256
        if time.time() - stat.st_mtime > 2:  # cache settled files only (git's "racy clean" rule)
            _verified[key] = ok
        return ok
    return _verified[key]


def locate(name: str, recheck: bool = False) -> Path | None:
    """First verified copy of a registered file in :func:`search_dirs`, or None when absent.

    Raises ``ValueError`` (one line, naming the file) when the first copy found has a wrong hash.
    """
    item = entry(name)
    for folder in search_dirs():
        file = folder / item.name
        if file.is_file():
            if not matches(file, item, recheck):
                raise ValueError(f"{item.name}: {file} does not match its registered SHA-256 "
                                 f"({item.sha256[:12]}...); tttlab never overwrites it: restore "
                                 f"the original, or delete it and run `tttlab data fetch`")
            return file
    return None


def download(name: str) -> Path:
    """Download a registered file with pooch into :func:`download_dir`, checking its SHA-256."""
    import pooch

    item = entry(name)
    target = download_dir() / item.name
    where = ", ".join(str(d) for d in search_dirs())
    if not item.urls:
        raise FileNotFoundError(f"{item.name}: not found in {where} and it has no download URL: "
                                f"run `tttlab data prepare {item.name}` (it writes {target})")
    errors = []
    for url in item.urls:
        pup = pooch.create(path=pooch.os_cache("tttlab"), base_url="", env=ENV,
                           registry={item.name: f"sha256:{item.sha256}"},
                           urls={item.name: url}, allow_updates=False)
        try:
            return Path(pup.fetch(item.name, downloader=_downloader))
        except (OSError, ValueError) as err:  # requests errors are OSErrors; bad hash ValueError
            errors.append(f"{url}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    raise FileNotFoundError(f"{item.name}: not found in {where} and the download failed "
                            f"({errors[0]}); download {item.urls[0]} (sha256 {item.sha256}) and "
                            f"save it as {target}")


def path(name: str) -> Path:
    """Verified local path of a registered file, downloading it when missing.

    Parameters
    ----------
    name : str
        Path relative to the data folder (``"dms/BLAT_ECOLX_Stiffler_2015.wt.fasta"``) or an
        assay short form (``"dms/BLAT_ECOLX_Stiffler_2015"`` is its ``.csv.gz``).

    Returns
    -------
    pathlib.Path
        The first copy found in ``TTTLAB_DATA_DIR``, ``../shared/data`` or the user cache.
        A wrong hash raises a one-line ``ValueError``; a missing file that cannot be downloaded
        raises a one-line ``FileNotFoundError`` saying what to download and where to put it.
    """
    return locate(name) or download(name)


def dms_assays() -> list[str]:
    """Names (ProteinGym ``DMS_id``) of the registered deep mutational scans, sorted."""
    return sorted(n[4:-7] for n in registry() if n.startswith("dms/") and n.endswith(".csv.gz"))


def dms_files(name: str) -> tuple[Path, Path]:
    """``(csv_path, wt_fasta_path)`` of an assay: ``dms_files("BLAT_ECOLX_Stiffler_2015")``."""
    assay = str(name).removeprefix("dms/").removesuffix(".csv.gz")
    if assay not in dms_assays():
        close = difflib.get_close_matches(assay, dms_assays(), n=3, cutoff=0.5)
        raise ValueError(f"unknown DMS assay {assay!r}; known: {', '.join(close or dms_assays())}")
    return path(f"dms/{assay}.csv.gz"), path(f"dms/{assay}.wt.fasta")


def structure_files(subset: str = "pfam40") -> list[Path]:
    """Sorted PDB files of a structure set: ``"pfam40"`` (40 domains) or ``"dms_targets"`` (8)."""
    names = [e.name for e in registry().values()
             if e.kind == f"structure/{subset}" and e.name.endswith(".pdb")]
    if not names:
        raise ValueError(f"unknown structure subset {subset!r}; use 'pfam40' or 'dms_targets'")
    return [path(n) for n in sorted(names)]


# --- command line: tttlab data list | fetch | verify | prepare


def status(name: str, recheck: bool = False) -> dict:
    """One file's row for ``tttlab data list``: kind, size, licence, source and state."""
    item = entry(name)
    try:
        file, state = locate(item.name, recheck), "verified"
    except ValueError:  # the first copy found has a wrong hash
        file = next(d / item.name for d in search_dirs() if (d / item.name).is_file())
        state = "MISMATCH"
    source = item.urls[0] if item.urls else f"tttlab data prepare ({item.recipe})"
    return {"name": item.name, "kind": item.kind, "size": item.size, "licence": item.licence,
            "state": state if file else "missing", "location": str(file.parent) if file else None,
            "source": source}


def select(name: str | None) -> list[Entry]:
    """Entries named by a file, an assay (``dms/X``: both its files), a dataset, or all (None)."""
    reg = registry()
    if name is None:
        return list(reg.values())
    name = name.strip("/")
    chosen = [e for e in reg.values()
              if name in (e.kind, e.dataset) or e.name.startswith(name + ".")]
    return chosen or [entry(name)]
