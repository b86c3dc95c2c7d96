"""Sweeps on a 2-worker Dask LocalCluster: a result per task, errors recorded, resumption."""

import gzip
import json
import os

import pandas as pd
import pytest

from tttlab.studies import sweep

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
    from distributed import LocalCluster

    # an existing cluster reached by its address, as with --scheduler tcp://host:8786
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        table = sweep.run_sweep(tasks, square_task, out, kwargs={"power": 3},
                                settings={"p": 3}, scheduler=cluster.scheduler_address,
                                progress=False)
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


ORIGINAL_ASSAYS = ("BLAT_ECOLX_Stiffler_2015", "SPG1_STRSG_Olson_2014",
                   "TADBP_HUMAN_Bolognesi_2019", "A4_HUMAN_Seuma_2022")


@pytest.fixture(scope="module")
def small_dms_dir(tmp_path_factory, data_dir):
    """The four original shared assays, 30 random substitution variants each (stop codons left
    out: they are not scored), plus one malformed assay."""
    folder = tmp_path_factory.mktemp("dms")
    for name in ORIGINAL_ASSAYS:
        table = pd.read_csv(data_dir / "dms" / f"{name}.csv.gz", nrows=3000)
        table = table[~table["mutant"].str.contains("*", regex=False)]
        table.sample(30, random_state=0).to_csv(folder / f"{name}.csv", index=False)
        fasta = (data_dir / "dms" / f"{name}.wt.fasta").read_text()
        (folder / f"{name}.wt.fasta").write_text(fasta)
    (folder / "BROKEN.csv").write_text("mutant,DMS_score\nW9999Q,1.0\nnot-a-mutant,2.0\n")
    (folder / "BROKEN.wt.fasta").write_text(">broken\nMKTAYIAKQR\n")
    with gzip.open(folder / "notes.csv.gz", "wt") as handle:  # no wt.fasta: not an assay
        handle.write("a,b\n1,2\n")
    return folder


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny):
    """The random 2-layer test model as a fair-esm checkpoint file (the sweep loads by path)."""
    from tttlab.engine.models import save_fair_esm_checkpoint

    path = tmp_path_factory.mktemp("models") / "esm2_tiny.pt"
    save_fair_esm_checkpoint(tiny[0], path)
    return str(path)


def test_sweep_fitness_resumes_and_reports_errors(small_dms_dir, tiny_checkpoint, tmp_path,
                                                  monkeypatch):
    pytest.importorskip("tttlab.studies.fitness").evaluate_assay
    out = tmp_path / "fitness"
    kwargs = dict(model=tiny_checkpoint, ttt_steps=1, workers=2, progress=False)
    table = sweep.sweep_fitness(small_dms_dir, out, **kwargs)
    assert table.attrs["submitted"] == 5
    rows = table.set_index("task_id")
    assert set(rows.index) == set(ORIGINAL_ASSAYS) | {"BROKEN"}
    assert (rows.loc[list(ORIGINAL_ASSAYS), "status"] == "ok").all()
    for name in ORIGINAL_ASSAYS:
        result = json.loads((out / f"{name}.json").read_text())["result"]
        assert result["assay"] == name and result["n_variants"] == 30 and result["ttt_steps"] == 1
        assert rows.loc[name, "delta_spearman"] == pytest.approx(
            rows.loc[name, "spearman_after"] - rows.loc[name, "spearman_before"], abs=1e-3)
    assert rows.loc["SPG1_STRSG_Olson_2014", "doubles_n"] == 30  # results_table columns
    from tttlab.present.plots import save_sweep_plot  # what `tttlab sweep fitness` saves

    save_sweep_plot(table, out, "delta_spearman_plot", "delta_spearman_vs_perplexity")
    assert (out / "delta_spearman_vs_perplexity.png").stat().st_size > 0
    assert rows.loc["BROKEN", "status"] == "error"
    assert rows.loc["BROKEN", "error_type"] == "ValueError"
    error = json.loads((out / "BROKEN.error.json").read_text())
    assert error["error_message"] and "\n" not in error["error_message"]
    saved = pd.read_csv(out / "summary.csv")
    assert len(saved) == 5 and (saved["status"] == "ok").sum() == 4

    # second run (keeping the recorded error): no task submitted, no file rewritten, same table
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    monkeypatch.setattr(sweep, "_client", None)  # starting a cluster would now fail
    again = sweep.sweep_fitness(small_dms_dir, out, retry_failed=False, **kwargs)
    assert again.attrs["submitted"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == mtimes
    assert again.equals(table)


def test_report_exit_status_says_whether_every_task_finished(tmp_path, capsys):
    from tttlab.cli import sweep as sweep_cli

    table = pd.DataFrame({"task_id": ["a", "b"], "status": ["ok", "ok"]})
    table.attrs["submitted"] = 2
    assert sweep_cli._report(table, tmp_path, as_json=False) == 0
    table.loc[1, "status"] = "error"
    assert sweep_cli._report(table, tmp_path, as_json=False) == 1
    assert sweep_cli._report(table, tmp_path, as_json=True) == 1
    assert "1 finished, 1 failed" in capsys.readouterr().out


def test_unwritable_or_file_out_is_refused_before_any_task_runs(tmp_path):
    calls = []
    file_out = tmp_path / "out.txt"
    file_out.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        sweep.run_sweep([("a", "p")], calls.append, file_out, progress=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(ValueError, match="not writable"):
            sweep.run_sweep([("a", "p")], calls.append, locked / "sub", progress=False)
    finally:
        locked.chmod(0o700)
    assert calls == []


def test_a_result_is_reused_only_while_its_inputs_are_unchanged(tmp_path):
    """A finished task is skipped on a rerun only when its input files (the DMS table and the
    wild-type FASTA beside it) hash the same as when it ran; an edited input runs again."""
    csv, fasta = tmp_path / "A.csv", tmp_path / "A.wt.fasta"
    csv.write_text("mutant,DMS_score\nM1A,0.5\n")
    fasta.write_text(">A\nMKT\n")
    out = tmp_path / "out"
    out.mkdir()
    settings = {"model": "m", "ttt_steps": 1}
    record = {"status": "ok", "settings": settings, "input_sha256": sweep.input_fingerprint(csv)}
    (out / "A.json").write_text(json.dumps(record))
    assert sweep._pending_tasks([("A", csv)], out, settings, True) == []
    fasta.write_text(">A\nMKS\n")  # the wild type changed: the stored result is stale
    assert sweep._pending_tasks([("A", csv)], out, settings, True) == [("A", csv)]
    fasta.write_text(">A\nMKT\n")
    assert sweep._pending_tasks([("A", csv)], out, settings, True) == []
    csv.write_text("mutant,DMS_score\nM1A,0.7\n")
    assert sweep._pending_tasks([("A", csv)], out, settings, True) == [("A", csv)]
    with pytest.raises(ValueError, match="other settings|use another --out"):
        sweep._pending_tasks([("A", csv)], out, {"model": "other"}, True)


def test_a_second_sweep_into_the_same_out_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with sweep._out_lock(out):
        with pytest.raises(ValueError, match="in use by another sweep"):
            with sweep._out_lock(out):
                pass
    assert not (out / ".sweep.lock").exists()  # released
    import socket

    (out / ".sweep.lock").write_text(f"{socket.gethostname()} 999999999")  # a process long gone
    with sweep._out_lock(out):
        assert (out / ".sweep.lock").read_text().endswith(str(os.getpid()))


def test_each_sweep_command_saves_its_own_figure(tmp_path, monkeypatch):
    """`tttlab sweep contacts` saves the before/after precision figure, `sweep fitness` the
    Spearman-change one (the sweeps themselves are replaced by a fixed table)."""
    import argparse

    from tttlab.cli import sweep as sweep_cli

    saved, table = [], pd.DataFrame({"task_id": ["a"], "status": ["ok"]})
    table.attrs["submitted"] = 1
    monkeypatch.setattr(sweep_cli, "save_sweep_plot", lambda t, out, helper, name: saved.append(
        (helper, name)))
    for name in ("sweep_fitness", "sweep_contacts"):
        monkeypatch.setattr(sweep_cli, name, lambda *a, **k: table)
    args = dict(out=str(tmp_path), model="m", ttt_steps=1, seed=0, device=None, only=None,
                limit=None, scheduler=None, workers=None, gpu=False, retry_failed=True,
                progress=False, json=True, no_plot=False, homologs=None, homolog_region=None)
    assert sweep_cli._cli_contacts(argparse.Namespace(pdb_dir="p", **args)) == 0
    assert sweep_cli._cli_fitness(argparse.Namespace(dms_dir="d", max_variants=None,
                                                     method="masked_marginals", **args)) == 0
    assert saved == [("before_after", "contacts_before_after"),
                     ("delta_spearman_plot", "delta_spearman_vs_perplexity")]


def test_sweep_fitness_with_a_folder_of_msas(small_dms_dir, tiny_checkpoint, tmp_path):
    """An assay with an MSA file of its name in the homologs folder gets homolog TTT; the others
    single-sequence TTT; the homologs enter the settings, so the plain sweep is not reused."""
    msas = tmp_path / "msas"
    msas.mkdir()
    from tttlab.data import path

    (msas / "SPG1_STRSG_Olson_2014.a2m.gz").write_bytes(
        path("families/SPG1_STRSG_proteingym.a2m.gz").read_bytes())
    out = tmp_path / "fitness_homologs"
    table = sweep.sweep_fitness(small_dms_dir, out, model=tiny_checkpoint, ttt_steps=1,
                                workers=1, progress=False, homologs=msas,
                                homolog_region="aligned",
                                only=["SPG1_STRSG_Olson_2014", "BLAT_ECOLX_Stiffler_2015"])
    rows = table.set_index("task_id")
    assert (rows["status"] == "ok").all()
    assert rows.loc["SPG1_STRSG_Olson_2014", "n_homologs"] > 1000
    assert rows.loc["BLAT_ECOLX_Stiffler_2015", "n_homologs"] == 0
