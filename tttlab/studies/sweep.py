"""Resumable sweeps over many proteins on a Dask ``distributed`` cluster: one task per DMS
assay (fitness) or structure (contacts), one JSON file per finished task, errors recorded beside,
a summary CSV at the end. Built on Dask futures (``Client.submit`` + ``as_completed``;
Rocklin, SciPy 2015).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
import uuid
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from tttlab.common.files import atomic_write_text, jsonable

DMS_SUFFIXES = (".csv.gz", ".csv")
STRUCTURE_SUFFIXES = (".pdb", ".cif")
SUMMARY_NAME = "summary.csv"

#: per worker process: (model name, device) -> model, loaded once and reused by every task
_MODELS: dict = {}
_MODEL_LOCK = threading.Lock()


# ------------------------------------------------------------------------------ inputs
def _strip_suffix(name: str, suffixes) -> str | None:
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def find_assays(dms_dir) -> list[tuple[str, Path]]:
    """``(assay id, csv path)`` for each ``*.csv`` / ``*.csv.gz`` with ``<id>.wt.fasta`` beside it.

    CSV files without a wild-type FASTA (e.g. ProteinGym's reference table) are not assays and are
    left out; ``ValueError`` when the folder holds no assay at all.
    """
    folder = Path(dms_dir)
    if not folder.is_dir():
        raise ValueError(f"--dms-dir {folder}: not a folder")
    tasks = []
    for p in sorted(folder.iterdir()):
        stem = _strip_suffix(p.name, DMS_SUFFIXES)
        if stem and (folder / f"{stem}.wt.fasta").is_file():
            tasks.append((stem, p))
    if not tasks:
        raise ValueError(f"{folder}: no <name>.csv[.gz] with a <name>.wt.fasta beside it")
    return tasks


def find_structures(pdb_dir) -> list[tuple[str, Path]]:
    """``(structure id, path)`` for every ``*.pdb`` / ``*.cif`` file in ``pdb_dir``."""
    folder = Path(pdb_dir)
    if not folder.is_dir():
        raise ValueError(f"--pdb-dir {folder}: not a folder")
    tasks = [(stem, p) for p in sorted(folder.iterdir())
             if (stem := _strip_suffix(p.name, STRUCTURE_SUFFIXES))]
    if not tasks:
        raise ValueError(f"{folder}: no .pdb or .cif files")
    return tasks


# ------------------------------------------------------------------------ worker side
def _worker_threads() -> int | None:
    """The calling Dask worker's thread count, or None outside a worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    return getattr(getattr(worker, "state", worker), "nthreads", None)


def worker_model(name: str, device=None):
    """The model ``name`` on ``device``, loaded once per process and cached (``_MODELS``).

    ``device=None`` picks CUDA when available; a local cluster with several GPUs gives worker ``i``
    the GPU ``i % count`` (dask-cuda workers see one GPU each, so they all take ``cuda:0``).
    """
    import torch

    from tttlab.engine.models import load_model

    if device is None and torch.cuda.device_count() > 1:
        try:
            from distributed import get_worker

            index = get_worker().name
            if isinstance(index, int):
                device = f"cuda:{index % torch.cuda.device_count()}"
        except (ImportError, ValueError):
            pass
    key = (str(name), None if device is None else str(device))
    if key not in _MODELS:
        _MODELS[key] = load_model(name, device=device)[0]
    return _MODELS[key]


def _run_task(func, path: str, kwargs: dict) -> dict:
    """Run ``func(path, **kwargs)`` in a worker; any exception becomes an error record.

    Tasks of one worker run one at a time (``_MODEL_LOCK``: the cached model is trained in place),
    each with as many torch threads as the worker has threads.
    """
    import torch

    start = time.perf_counter()
    record = {"input": str(path)}
    threads = _worker_threads()
    try:
        with _MODEL_LOCK:
            if threads:
                torch.set_num_threads(threads)
            result = func(path, **kwargs)
            if not isinstance(result, dict):
                raise TypeError(f"task function returned {type(result).__name__}, not dict")
            record["result"] = jsonable(result)
        record["status"] = "ok"
    except Exception as err:  # recorded, not raised: one bad input must not stop the sweep
        lines = str(err).strip().splitlines()
        record.update(status="error", error_type=type(err).__name__,
                      error_message=lines[0] if lines else "",
                      traceback=traceback.format_exc(limit=-4))
    record["wall_seconds"] = round(time.perf_counter() - start, 3)
    record["worker_pid"] = os.getpid()
    return record


# ------------------------------------------------------------------------ client side
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def scalar_columns(result: dict) -> dict:
    """The default summary columns of one result: its scalar (number, text, bool, None) values."""
    return {k: v for k, v in result.items()
            if isinstance(v, (int, float, str, bool)) or v is None}


@contextmanager
def _client(scheduler: str | None, workers: int | None, gpu: bool, n_tasks: int):
    """A ``Client`` on ``scheduler``, or on a fresh LocalCluster (one single-threaded worker
    process per core, or per GPU with ``gpu``; never more workers than tasks)."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    if gpu:
        import torch

        default = max(1, torch.cuda.device_count())
    else:
        default = os.cpu_count() or 1
    n = max(1, min(workers or default, n_tasks))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR,
                           resources={"GPU": 1} if gpu else None)
    with cluster, Client(cluster) as client:
        yield client


def _writable_folder(out: Path) -> Path:
    """``out`` created if missing and checked writable before any compute is spent on the sweep."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ValueError(f"--out {out} is not writable ({err.strerror or type(err).__name__})") \
            from None
    return out


@contextmanager
def _out_lock(out: Path):
    """Hold ``out/.sweep.lock`` (host and process id) while a sweep writes there: a second sweep
    into the same folder is refused with a one-line error; a lock left by a process that no
    longer runs on this host is taken over."""
    import socket

    lock = out / ".sweep.lock"
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            host, _, pid = lock.read_text().partition(" ")
            alive = host != socket.gethostname() or _process_alive(int(pid or 0))
            if alive:
                raise ValueError(f"--out {out} is in use by another sweep ({lock.read_text()}); "
                                 f"wait for it, or delete {lock} if it is not running") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        os.write(fd, me.encode())
        os.close(fd)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_sweep(tasks, func, out, kwargs: dict | None = None, settings: dict | None = None,
              scheduler: str | None = None, workers: int | None = None, gpu: bool = False,
              retry_failed: bool = True, progress: bool = True,
              columns=scalar_columns) -> pd.DataFrame:
    """Run ``func(path, **kwargs)`` for every ``(task_id, path)`` on Dask workers, resumably.

    Parameters
    ----------
    tasks : ``(task_id, input path)`` pairs; ids name the output files, so they must be unique.
    func : an importable function run in the workers; returns a dict of results.
    out : folder for ``<task_id>.json`` (finished), ``<task_id>.error.json`` (failed) and
        ``summary.csv``; created if missing.
    kwargs : keyword arguments for ``func`` (must pickle).
    settings : what makes a result reusable (model, steps, ...); stored in every result file. A
        rerun skips tasks whose result file has the same settings; a result made with other
        settings raises ``ValueError`` (use another ``out``).
    scheduler : address of a running Dask scheduler (``tcp://host:8786``); ``None`` starts a
        LocalCluster with ``workers`` single-threaded worker processes (default: one per core).
    gpu : submit every task with ``resources={"GPU": 1}`` so a GPU worker runs one at a time.
    retry_failed : rerun tasks that have only an error file (default); ``False`` keeps the error.
    progress : ``tqdm.auto`` bar advancing as tasks finish.
    columns : ``f(result) -> dict`` of summary columns (default: the result's scalars).

    Returns
    -------
    The summary DataFrame (one row per task: status, wall_seconds, scalar results, error), written
    to ``out/summary.csv``; ``df.attrs["submitted"]`` counts the tasks run by this call.
    """
    out = _writable_folder(Path(out))
    ids = [t for t, _ in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("task ids must be unique")
    settings = jsonable(settings or {})
    with _out_lock(out):
        pending = _pending_tasks(tasks, out, settings, retry_failed)
        if pending:
            with _client(scheduler, workers, gpu, len(pending)) as client:
                _run_on_cluster(client, pending, func, kwargs or {}, out, settings, gpu, progress)
        table = summarize(out, ids, columns)
        table.attrs["submitted"] = len(pending)
        atomic_write_text(out / SUMMARY_NAME, table.to_csv(index=False))
    return table


def input_fingerprint(path) -> str:
    """SHA-256 over a task's input file and, for a DMS table, the ``<id>.wt.fasta`` beside it: a
    result is reused only while its inputs are byte for byte the same."""
    import hashlib

    path = Path(path)
    files = [path]
    stem = _strip_suffix(path.name, DMS_SUFFIXES)
    if stem and (path.parent / f"{stem}.wt.fasta").is_file():
        files.append(path.parent / f"{stem}.wt.fasta")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def _pending_tasks(tasks, out: Path, settings: dict, retry_failed: bool) -> list:
    """The tasks without a finished result in ``out`` made from the same input bytes (and, unless
    ``retry_failed``, without a recorded error); a result made with other settings is refused."""
    pending = []
    for task_id, path in tasks:
        done = _read_json(out / f"{task_id}.json")
        if done is not None:
            if done.get("settings") != settings:
                raise ValueError(f"{out / task_id}.json was made with settings "
                                 f"{done.get('settings')}, not {settings}: use another --out")
            if done.get("input_sha256") == input_fingerprint(path):
                continue
            pending.append((task_id, path))  # the input changed since: run it again
            continue
        if (out / f"{task_id}.error.json").exists() and not retry_failed:
            continue
        pending.append((task_id, path))
    return pending


def _run_on_cluster(client, pending, func, kwargs: dict, out: Path, settings: dict, gpu: bool,
                    progress: bool) -> None:
    """Submit every pending task and write each record as it finishes: ``<id>.json`` when it
    succeeded (removing an older error file), ``<id>.error.json`` when it failed."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    resources = {"GPU": 1} if gpu else None
    if gpu and not any((w.get("resources") or {}).get("GPU") for w in
                       client.scheduler_info()["workers"].values()):
        warnings.warn("--gpu: no worker offers a 'GPU' resource yet; the tasks wait "
                      "for one (start workers with --resources GPU=1)", stacklevel=3)
    fingerprints = {task_id: input_fingerprint(path) for task_id, path in pending}
    futures = {}
    for task_id, path in pending:
        future = client.submit(_run_task, func, str(path), kwargs, pure=False,
                               key=f"tttlab-{task_id}-{uuid.uuid4().hex[:8]}",
                               resources=resources)
        futures[future] = task_id
    bar = tqdm(as_completed(list(futures)), total=len(futures), desc="sweep",
               disable=not progress)
    for future in bar:
        task_id = futures[future]
        try:
            record = future.result()
        except Exception as err:  # the worker died, the task was cancelled, ...
            record = {"status": "error", "error_type": type(err).__name__,
                      "error_message": (str(err).splitlines() or [""])[0]}
        record.update(task_id=task_id, settings=settings, input_sha256=fingerprints[task_id],
                      finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        ok = record["status"] == "ok"
        atomic_write_text(out / f"{task_id}{'' if ok else '.error'}.json",
                          json.dumps(record, indent=1, default=str))
        if ok:
            (out / f"{task_id}.error.json").unlink(missing_ok=True)
        bar.set_postfix_str(f"{task_id}: {record['status']}")


def summarize(out, ids=None, columns=scalar_columns) -> pd.DataFrame:
    """One row per task of ``out`` (``ids``, default: every result or error file): task_id,
    status, wall_seconds, finished_at, the result's ``columns(result)`` (default: its scalars),
    error_type and error_message."""
    out = Path(out)
    if ids is None:
        names = [p.name for p in out.glob("*.json") if not p.name.startswith(".")]
        ids = sorted({n[: -len(".error.json")] if n.endswith(".error.json") else n[:-5]
                      for n in names})
    rows = []
    for task_id in ids:
        record = _read_json(out / f"{task_id}.json") or _read_json(out / f"{task_id}.error.json")
        if record is None:
            rows.append({"task_id": task_id, "status": "missing"})
            continue
        row = {k: record.get(k) for k in ("task_id", "status", "wall_seconds", "finished_at")}
        row["task_id"] = task_id
        if record.get("result"):
            for key, value in columns(record["result"]).items():
                row.setdefault(key, value)
        row["error_type"] = record.get("error_type")
        row["error_message"] = record.get("error_message")
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------- task functions
def fitness_task(dms_path: str, model: str, device=None, cfg=None, method="masked_marginals",
                 max_variants=None, seed=0, homologs=None) -> dict:
    """One fitness sweep task: ``tttlab.fitness.evaluate_assay`` with the worker's cached model;
    ``homologs``: ``"auto"`` or a folder of MSA files named after the assays
    (``data.homologs.source_for``)."""
    from tttlab.data.homologs import source_for
    from tttlab.studies.fitness import evaluate_assay

    stem = _strip_suffix(Path(dms_path).name, DMS_SUFFIXES)
    wt_fasta = Path(dms_path).with_name(f"{stem}.wt.fasta")
    return evaluate_assay(worker_model(model, device), dms_path, wt_fasta=str(wt_fasta), cfg=cfg,
                          method=method, max_variants=max_variants, seed=seed, progress=False,
                          homologs=source_for(homologs, stem))


def contacts_task(pdb_path: str, model: str, device=None, cfg=None, chain=None,
                  homologs=None) -> dict:
    """One contacts sweep task: ``tttlab.structure.evaluate_structure`` with the cached model;
    ``homologs`` as in ``fitness_task``, by the structure file's stem."""
    from tttlab.data.homologs import source_for
    from tttlab.studies.structure import evaluate_structure

    return evaluate_structure(worker_model(model, device), pdb_path, chain=chain, cfg=cfg,
                              progress=False,
                              homologs=source_for(homologs, Path(pdb_path).name.split(".")[0]))


def _select(tasks, only, limit):
    """Keep the tasks named in ``only`` (ids; ``ValueError`` for unknown ones), then the first
    ``limit``."""
    if only:
        known = dict(tasks)
        missing = [t for t in only if t not in known]
        if missing:
            raise ValueError(f"not found among the inputs: {', '.join(missing)}")
        tasks = [(t, known[t]) for t in dict.fromkeys(only)]
    return tasks[:limit]


def _settings(model, ttt_steps, seed, homologs=None, homolog_region=None, **extra) -> dict:
    """A sweep's settings (a changed setting reruns its tasks); the homolog ones only when used,
    so earlier single-sequence sweeps resume."""
    out = {"model": str(model), "ttt_steps": int(ttt_steps), "seed": int(seed), **extra}
    if homologs is not None:
        out.update(homologs=str(homologs), homolog_region=homolog_region)
    return out


def _sweep_config(model, ttt_steps, seed, homolog_region):
    from tttlab.engine.config import preset

    extra = {"homolog_region": homolog_region} if homolog_region else {}
    return preset(str(model), steps=ttt_steps, seed=seed, **extra)


def sweep_fitness(dms_dir, out, model: str = "tttlab-mini", ttt_steps: int = 30,
                  max_variants: int | None = None, method: str = "masked_marginals",
                  seed: int = 0, device=None, only=None, limit: int | None = None,
                  scheduler: str | None = None, workers: int | None = None, gpu: bool = False,
                  retry_failed: bool = True, progress: bool = True, homologs=None,
                  homolog_region: str | None = None) -> pd.DataFrame:
    """Fitness before/after TTT for every assay of ``dms_dir`` (see ``find_assays``), one Dask
    task per assay, resumable (see ``run_sweep``). ``only`` (assay ids) and ``limit`` (first N by
    name) select assays. ``homologs``: ``"auto"`` or a folder of MSA files named after the assays
    (homolog-aware TTT; assays without a file get single-sequence TTT).

    Returns the summary DataFrame (also ``out/summary.csv``; ``tttlab sweep`` also saves its
    figure, ``present.plots.save_sweep_plot``).
    """
    tasks = _select(find_assays(dms_dir), only, limit)
    cfg = _sweep_config(model, ttt_steps, seed, homolog_region)
    settings = _settings(model, ttt_steps, seed, homologs, cfg.homolog_region,
                         max_variants=max_variants, method=method)
    table = run_sweep(tasks, fitness_task, out,
                      kwargs=dict(model=str(model), device=device, cfg=cfg, method=method,
                                  max_variants=max_variants, seed=seed, homologs=homologs),
                      settings=settings, scheduler=scheduler, workers=workers, gpu=gpu,
                      retry_failed=retry_failed, progress=progress, columns=_fitness_columns)
    return table


def sweep_contacts(pdb_dir, out, model: str = "tttlab-mini", ttt_steps: int = 30,
                   seed: int = 0, device=None, only=None, limit: int | None = None,
                   scheduler: str | None = None, workers: int | None = None, gpu: bool = False,
                   retry_failed: bool = True, progress: bool = True, homologs=None,
                   homolog_region: str | None = None) -> pd.DataFrame:
    """Contact precision before/after TTT for every structure of ``pdb_dir`` (see
    ``find_structures``), one Dask task per file, resumable (see ``run_sweep``); ``only`` (file
    stems such as ``1AQT_A``) and ``limit`` select structures; ``homologs`` as in
    ``sweep_fitness``, by file stem."""
    tasks = _select(find_structures(pdb_dir), only, limit)
    cfg = _sweep_config(model, ttt_steps, seed, homolog_region)
    table = run_sweep(tasks, contacts_task, out,
                      kwargs=dict(model=str(model), device=device, cfg=cfg, homologs=homologs),
                      settings=_settings(model, ttt_steps, seed, homologs, cfg.homolog_region),
                      scheduler=scheduler, workers=workers, gpu=gpu,
                      retry_failed=retry_failed, progress=progress)
    return table


def _fitness_columns(result: dict) -> dict:
    """Summary columns of one fitness result: ``tttlab.fitness.results_table``'s row (intervals
    as ``_lo``/``_hi``, singles/doubles), or its scalars if the result has another shape."""
    from tttlab.studies.fitness import results_table

    try:
        return results_table([result]).iloc[0].to_dict()
    except (KeyError, TypeError, ValueError):
        return scalar_columns(result)
