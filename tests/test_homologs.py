"""Family-aware TTT: MSA reading in four formats, usable homologs and their weights, the batches
TTT draws from them, the local search and its cache, the CLI and its one-line errors."""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import tttlab
from tttlab.common.homolog_set import HomologSet
from tttlab.data import path
from tttlab.data.fasta import read_fasta
from tttlab.data.homologs import from_alignment, redundancy_weights, search
from tttlab.data.msa import Alignment, read_msa
from tttlab.engine import ttt
from tttlab.engine.ttt import customized, snapshot

pytest.importorskip("pyhmmer")

FAMILIES = {"a3m": "families/BLAT_ECOLX_colabfold.a3m.gz",
            "a2m": "families/SPG1_STRSG_proteingym.a2m.gz",
            "afa": "families/PF00595_PDZ_ardca.fasta.gz",
            "stockholm": "families/PF00076_RRM_pfam_seed.sto.gz"}
GB1 = "dms/SPG1_STRSG_Olson_2014_singles"
UBQ = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"


def wild_type(assay):
    return read_fasta(path(f"{assay}.wt.fasta"))[0][1]


@pytest.mark.parametrize("fmt,rows,width", [("a3m", 4501, 286), ("a2m", 3109, 448),
                                            ("afa", 36690, 82), ("stockholm", 79, 80)])
def test_every_format_reads_into_one_alignment(fmt, rows, width):
    msa = read_msa(path(FAMILIES[fmt]))
    assert (msa.format, len(msa), len(msa.aligned[0])) == (fmt, rows, width)
    assert all(len(r) == width for r in msa.aligned[:200])
    assert all(s.isalpha() and s.isupper() for s in msa.sequences[:200])
    # an unaligned sequence holds its row's residues and (A3M) its insertions
    assert all(len(s) >= len(r) - r.count("-") for s, r in zip(msa.sequences, msa.aligned))


def test_a3m_insertions_are_residues_not_columns(tmp_path):
    f = tmp_path / "tiny.a3m"
    f.write_text(">q\nMKV-LA\n>h1 score 3\nMKaaVQLA\n>h2\n-KV-LAc\n")
    msa = read_msa(f)
    assert msa.ids == ("q", "h1", "h2")
    assert msa.aligned == ("MKV-LA", "MKVQLA", "-KV-LA")
    assert msa.sequences == ("MKVLA", "MKAAVQLA", "KVLAC")
    colabfold = tmp_path / "colabfold_output"  # no suffix: the format comes from the content
    colabfold.write_text("#5\t1\n" + f.read_text())
    got = read_msa(colabfold)
    assert (got.format, got.ids, got.aligned, got.sequences) == ("a3m", msa.ids, msa.aligned,
                                                                  msa.sequences)


def test_bad_msa_files_are_one_line_errors(tmp_path):
    cases = {"empty.a3m": b"", "binary.a3m": b"\x00\x01\x02garbage",
             "mixed.a3m": b">a\nMKVL\n>b\nMKV\n", "letters.a3m": b">a\nMKVL\n>b\nMK1L\n",
             "ragged.fasta": b">a\nMKVL\n>b\nMKV\n", "what.txt": b"hello world\n"}
    for name, data in cases.items():
        f = tmp_path / name
        f.write_bytes(data)
        with pytest.raises(ValueError) as err:
            read_msa(f)
        assert name in str(err.value) and "\n" not in str(err.value)
    f = tmp_path / "mixed.a3m"
    out = subprocess.run([sys.executable, "-m", "tttlab", "perplexity", UBQ[:30], "--homologs",
                          str(f), "--ttt-steps", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "mixed.a3m" in out.stderr


def test_redundancy_weights_count_near_identical_rows():
    rows = ["MKVLAAGG", "MKVLAAGA", "WWWWPPPP", "MKVL----"]
    w = redundancy_weights(rows)
    # rows 0 and 1 are 7/8 identical; the fragment row 3 shares all 4 of its residues with both,
    # but they share only half of theirs with it: identity is counted over the row's own residues
    assert list(w) == pytest.approx([1 / 2, 1 / 2, 1.0, 1 / 3])
    many = ["".join(np.random.default_rng(i).choice(list("ACDEFGHIKL"), 30)) for i in range(300)]
    exact = redundancy_weights(many)
    assert np.allclose(redundancy_weights(many, exact_up_to=100), exact)  # unrelated rows: 1 each


def test_usable_homologs_leave_out_the_target_and_its_copies():
    target = wild_type("dms/BLAT_ECOLX_Stiffler_2015")
    msa = read_msa(path(FAMILIES["a3m"]))
    full = from_alignment(target, msa, "full")
    aligned = from_alignment(target, msa, "aligned")
    assert len(full) == len(aligned) and 0 < len(full) < len(msa) - 1
    assert target not in full.sequences
    assert max(map(len, aligned.sequences)) <= len(target)
    assert all(0 < w <= 1 for w in full.weights)
    gb1 = wild_type(GB1)  # the B1 domain inside the 448-residue query row
    domain = from_alignment(gb1, read_msa(path(FAMILIES["a2m"])), "aligned")
    assert len(domain) > 1000 and max(map(len, domain.sequences)) <= len(gb1)


def test_an_identity_range_keeps_relatives_not_copies():
    target = "ACDEFGHIKLMNPQRSTVWY"
    rows = [target,
            "ACDEFGHIKLMNPQRSTVWW",  # 19/20 identical: a near-copy, never used
            "ACDEFGHIKLMNPQRAAAAA",  # 15/20
            "ACDEFGHIKLAAAAAAAAAA",  # 10/20
            "ACDEFAAAAAAAAAAAAAAA",  # 5/20
            "ACDEFGHIKL----------"]  # half the target, a copy over its own 10 residues
    msa = Alignment(tuple(map(str, range(len(rows)))), tuple(rows),
                    tuple(r.replace("-", "") for r in rows), "a3m", "hand-made")
    assert from_alignment(target, msa).sequences == tuple(rows[2:5])
    assert from_alignment(target, msa, identity=(0.3, 0.7)).sequences == (rows[3],)
    assert from_alignment(target, msa, identity=(0.5, 1.0)).sequences == tuple(rows[1:4])
    real = read_msa(path(FAMILIES["a3m"]))  # the ranges partition a real family
    tem1 = wild_type("dms/BLAT_ECOLX_Stiffler_2015")
    parts = [from_alignment(tem1, real, identity=r) for r in ((0, 0.3), (0.3, 0.7), (0.7, 0.95))]
    assert sum(map(len, parts)) == len(from_alignment(tem1, real)) and min(map(len, parts)) > 0
    with pytest.raises(ValueError, match="identity range"):
        from_alignment(target, msa, identity=(0.7, 0.3))
    with pytest.raises(ValueError, match="cannot be measured"):  # no target row to measure against
        from_alignment("W" * 20, msa, identity=(0.3, 0.7))


def test_an_alignment_without_the_target_uses_every_row(tmp_path):
    rows = read_fasta(path(FAMILIES["a3m"]))[1:41]  # no query row
    f = tmp_path / "no_query.a3m"
    f.write_text("".join(f">{h}\n{s}\n" for h, s in rows))
    with pytest.warns(UserWarning, match="all 40 rows"):
        family = from_alignment(wild_type("dms/BLAT_ECOLX_Stiffler_2015"), read_msa(f))
    assert len(family) == 40


def test_homolog_batches_mix_target_and_weighted_homologs(tiny, monkeypatch):
    model, _ = tiny
    seen, real = [], ttt.corrupt
    monkeypatch.setattr(ttt, "corrupt", lambda b, *a, **k: seen.append(b.clone()) or real(b, *a, **k))
    family = HomologSet(("MKTAYIAKQR", "GSHMQIFVKTLTG" * 3), (1.0, 1e-9), "test")
    start = snapshot(model)
    with customized(model, UBQ[:40], progress=False, steps=2, batch_size=4, grad_accum_steps=2,
                    homologs=family, homolog_target_share=0.5) as result:
        assert result.n_homologs == 2 and result.homolog_source == "test"
        assert all(np.isfinite(h["loss"]) for h in result.history[1:])
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    rows = torch.cat([b for b in seen])
    pad = model.alphabet.padding_idx
    lengths = (rows != pad).sum(1).tolist()
    assert set(lengths) <= {42, 12} and 42 in lengths and 12 in lengths  # target and homolog 1
    assert any((b == pad).any() for b in seen)  # padded micro-batches
    # the same seed draws the same batches; homologs=None is single-sequence TTT
    runs = []
    for _ in range(2):
        with customized(model, UBQ[:40], progress=False, steps=1, batch_size=2, grad_accum_steps=1,
                        homologs=family) as r:
            runs.append((r.history[1]["loss"], model.layers[0].fc1.weight.clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    with pytest.raises(TypeError, match="tttlab.homologs"):
        ttt.customize(model, UBQ[:40], progress=False, steps=1, homologs="auto")
    with pytest.warns(UserWarning, match="no usable homologs"):
        r = ttt.customize(model, UBQ[:40], progress=False, steps=1, homologs=[])
    ttt.restore(model, start)
    assert r.n_homologs == 0


def test_top_level_customize_takes_an_msa_file(tiny):
    model, _ = tiny
    gb1 = wild_type(GB1)
    with tttlab.customized(model, gb1, progress=False, steps=1, batch_size=2, grad_accum_steps=1,
                           homologs=path(FAMILIES["a2m"]), homolog_region="aligned") as result:
        assert result.n_homologs > 1000 and "a2m" in result.homolog_source


def test_local_search_finds_homologs_and_caches_them(tmp_path, monkeypatch):
    """jackhmmer of GB1 against a small database: 30 protein G rows of the A2M among 300 unrelated
    Swiss-Prot proteins; the second call is read from the cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from tttlab.data import registry

    monkeypatch.setattr(registry, "cache_dir", lambda: tmp_path / "cache" / "tttlab")
    gb1 = wild_type(GB1)
    family = read_msa(path(FAMILIES["a2m"]))
    with gzip.open(path("sequences/swissprot_2014_01/swissprot_2014_01.fasta.gz"), "rt") as fh:
        other = []
        for line in fh:
            if line.startswith(">"):
                if len(other) == 600:
                    break
                other.append(line)
            else:
                other.append(line)
    db = tmp_path / "db.fasta"
    db.write_text("".join(f">pg{i}\n{s}\n" for i, s in enumerate(family.sequences[1:31]))
                  + "".join(other))
    hits = search(gb1, database=db, iterations=2)
    assert hits.ids[0] == "target" and len(hits) > 10
    assert sum(i.startswith("pg") for i in hits.ids) >= 10
    monkeypatch.setattr("pyhmmer.hmmer.jackhmmer", lambda *a, **k: 1 / 0)  # must not run again
    again = search(gb1, database=db, iterations=2)
    assert again.ids == hits.ids and again.aligned == hits.aligned
    assert len(from_alignment(gb1, again, "aligned")) >= 1


def _small_msa(fmt, folder):
    """The shared family files, or fast stand-ins of the same format: GB1's A2M rows written as A3M
    (its '.' removed), the PDZ aligned FASTA's first 300 rows (no target row)."""
    if fmt in ("a2m", "stockholm"):
        return path(FAMILIES[fmt])
    if fmt == "a3m":
        rows = read_fasta(path(FAMILIES["a2m"]))[:300]
        out = folder / "gb1.a3m"
        out.write_text("".join(f">{h}\n{r.replace('.', '')}\n" for h, r in rows))
        return out
    rows = read_fasta(path(FAMILIES["afa"]))[:300]
    out = folder / "pdz.fasta"
    out.write_text("".join(f">{h}\n{r}\n" for h, r in rows))
    return out


@pytest.mark.parametrize("fmt,assay", [("a3m", GB1), ("a2m", GB1),
                                       ("afa", "dms/DLG4_RAT_McLaughlin_2012"),
                                       ("stockholm", "dms/PABP_YEAST_Melamed_2013")])
def test_cli_fitness_with_homologs_reports_them(fmt, assay, tmp_path):
    msa = _small_msa(fmt, tmp_path)
    out = subprocess.run([sys.executable, "-m", "tttlab", "fitness", "--dms", assay.split("/")[-1],
                          "--homologs", str(msa), "--homolog-region", "aligned",
                          "--ttt-steps", "1", "--max-variants", "60", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["n_homologs"] > 10 and fmt in row["homolog_source"]
    assert row["n_homologs"] == len(from_alignment(wild_type(assay), read_msa(msa), "aligned"))
    assert np.isfinite(row["spearman_before"]) and np.isfinite(row["spearman_after"])


def test_cli_contacts_with_homologs():
    out = subprocess.run([sys.executable, "-m", "tttlab", "contacts", "--pdb",
                          "SPG1_STRSG_Olson_2014_singles", "--homologs", str(path(FAMILIES["a2m"])),
                          "--homolog-region", "aligned", "--ttt-steps", "1", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["n_homologs"] > 1000 and np.isfinite(row["precision_at_L_long_after"])


def test_function_protocol_takes_a_folder_of_msas(tiny, tmp_path):
    """Per-protein MSAs come from a folder, by protein id; a protein without one gets
    single-sequence TTT."""
    import pandas as pd

    from tttlab.studies import function

    model, _ = tiny
    folder = tmp_path / "msas"
    folder.mkdir()
    (folder / "GB1.a2m.gz").write_bytes(path(FAMILIES["a2m"]).read_bytes())
    gb1 = wild_type(GB1)
    train = pd.DataFrame({"id": [f"t{i}" for i in range(6)], "label": ["a", "b"] * 3,
                          "sequence": [UBQ[i:i + 40] for i in range(6)]})
    test = pd.DataFrame({"id": ["GB1", "UBQ"], "label": ["a", "b"], "sequence": [gb1, UBQ]})
    cfg = tttlab.preset(steps=1, batch_size=2, grad_accum_steps=1, homolog_region="aligned")
    result = function.run_protocol(model, train, test, cfg, cache=False, progress=False,
                                   n_boot=10, homologs=folder)
    counts = dict(zip(result.table["id"], result.table["n_homologs"]))
    assert counts["GB1"] > 1000 and counts["UBQ"] == 0
    assert result.summary()["n_homologs"] == counts["GB1"]
