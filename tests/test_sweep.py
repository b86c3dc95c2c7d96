"""Sweeps on a 2-worker Dask LocalCluster: a result per task, errors recorded, resumption."""

import gzip
import json
import os

import pandas as pd
import pytest

from tttlab import sweep

pytest.importorskip("distributed")


def square_task(path, power=2):
    """A trivial task: reads an integer from a file; fails on anything else."""
    value = int(open(path).read())
    return {"value": value, "result": value ** power, "pid": os.getpid()}


def test_find_inputs(tmp_path, data_dir):
    assays = dict(sweep.find_assays(data_dir / "dms"))
    assert len(assays) == 12  # the reference table has no wt.fasta: not an assay
    assert "ProteinGym_DMS_substitutions_reference" not in assays
    assert assays["BLAT_ECOLX_Stiffler_2015"].name == "BLAT_ECOLX_Stiffler_2015.csv.gz"
    assert len(sweep.find_structures(data_dir / "structures" / "pfam40")) == 40
    with pytest.raises(ValueError, match="no <name>.csv"):
        sweep.find_assays(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        sweep.find_structures(tmp_path / "missing")


def test_run_sweep_generic(tmp_path):
    tasks = []
    for name, text in [("a", "3"), ("b", "4"), ("bad", "four")]:
        (tmp_path / f"{name}.txt").write_text(text)
        tasks.append((name, tmp_path / f"{name}.txt"))
    out = tmp_path / "out"
    table = sweep.run_sweep(tasks, square_task, out, kwargs={"power": 3}, settings={"p": 3},
                            workers=2, progress=False)
    assert table.attrs["submitted"] == 3
    rows = table.set_index("task_id")
    assert rows.loc["a", "result"] == 27 and rows.loc["b", "result"] == 64
    assert rows.loc["bad", "status"] == "error" and rows.loc["bad", "error_type"] == "ValueError"
    error = json.loads((out / "bad.error.json").read_text())
    assert "invalid literal" in error["error_message"] and "\n" not in error["error_message"]
    assert not (out / "bad.json").exists()
    assert pd.read_csv(out / "summary.csv").shape[0] == 3

    # rerun after fixing the bad input: only it runs (here as a GPU-resource task on a
    # one-worker cluster that offers GPU=1), its error file goes away
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("[ab].json")}
    (tmp_path / "bad.txt").write_text("5")
    table = sweep.run_sweep(tasks, square_task, out, kwargs={"power": 3}, settings={"p": 3},
                            gpu=True, progress=False)
    assert table.attrs["submitted"] == 1
    assert (table["status"] == "ok").all() and not (out / "bad.error.json").exists()
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("[ab].json")} == mtimes
    # nothing left to do: no cluster is started at all
    assert sweep.run_sweep(tasks, square_task, out, kwargs={"power": 3}, settings={"p": 3},
                           progress=False).attrs["submitted"] == 0
    # results made with other settings are never silently reused
    with pytest.raises(ValueError, match="other|not"):
        sweep.run_sweep(tasks, square_task, out, settings={"p": 2}, progress=False)
