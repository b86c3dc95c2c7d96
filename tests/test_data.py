"""Data registry: every file verifies, tampered and missing files give one-line errors, the CLI
works offline, and the automated ``prepare`` recipes rebuild registered files byte for byte."""

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import requests

from tttlab.cli import data as data_cli
from tttlab.data import registry as data
from tttlab.data.fasta import read_fasta
from tttlab.data import prepare

SHARED = Path(os.environ["TTTLAB_DATA_DIR"])
SMALL = "dms/BLAT_ECOLX_Stiffler_2015.wt.fasta"


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="tttlab")
    data_cli.register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def offline(url, output_file, pooch, check_only=False):
    raise requests.exceptions.ConnectionError(f"no network in tests: {url}")


def no_pip(recipe, source=None):
    raise FileNotFoundError(f"no pip download in tests ({recipe})")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """TTTLAB_DATA_DIR = an empty tmp folder, no shared folder, an empty cache, no network."""
    monkeypatch.setenv("TTTLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(data, "shared_dir", lambda: tmp_path / "no-shared")
    monkeypatch.setattr(data, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(data, "_downloader", offline)
    monkeypatch.setattr(prepare, "wheel", no_pip)
    monkeypatch.setattr(prepare, "metastudent_deb", lambda source=None: no_pip("apt-get"))
    return tmp_path / "data"


def test_registry_matches_sha256sums_and_every_file_verifies():
    lines = (SHARED / "SHA256SUMS").read_text().splitlines()
    sums = dict(reversed(line.split()) for line in lines)
    reg = data.registry()
    assert set(reg) == set(sums) and len(reg) == 89
    for name, item in reg.items():
        assert item.sha256 == sums[name]
        assert data.locate(name, recheck=True) == SHARED / name
        assert item.urls or item.recipe, name


def test_sources_are_pinned_and_recipes_known():
    for item in data.registry().values():
        for url in item.urls:
            assert url.startswith("https://")
            if "github" in url:
                assert re.search(r"/[0-9a-f]{40}/", url), url
        assert item.recipe in (None, *prepare.AUTOMATED, *prepare.MANUAL)
    kinds = {e.kind for e in data.registry().values()}
    assert kinds == {"fitness/dms", "structure/pfam40", "structure/dms_targets",
                     "sequences/flip_secondary_structure", "sequences/flip_conservation",
                     "function/localization", "function/terpene_synthases",
                     "sequences/swissprot_2014_01", "homologs/families"}


def test_names_short_forms_and_listings():
    blat = "dms/BLAT_ECOLX_Stiffler_2015"
    assert data.path(blat) == SHARED / f"{blat}.csv.gz"
    assert data.path(SMALL) == SHARED / SMALL
    assays = data.dms_assays()
    assert len(assays) == 12 and "SPG1_STRSG_Olson_2014_singles" in assays
    csv_path, fasta = data.dms_files("dms/SUMO1_HUMAN_Weile_2017")
    assert csv_path.name == "SUMO1_HUMAN_Weile_2017.csv.gz"
    assert len(read_fasta(fasta)[0][1]) == 101
    assert len(data.structure_files("pfam40")) == 40
    assert [p.name for p in data.structure_files("dms_targets")][:2] == ["1A5R_A.pdb", "1AH9.pdb"]
    with pytest.raises(ValueError, match="did you mean dms/BLAT_ECOLX_Stiffler_2015"):
        data.path("dms/BLAT_ECOLX_Stifler_2015.csv.gz")
    with pytest.raises(ValueError, match="unknown DMS assay"):
        data.dms_files("GFP")
    with pytest.raises(ValueError, match="unknown structure subset"):
        data.structure_files("cath")


def test_hashes_are_cached_per_process(monkeypatch):
    assert data.locate(SMALL) == SHARED / SMALL  # the shared copy is settled: hashed once

    def rehash(file):
        raise AssertionError("hashed again")

    monkeypatch.setattr(data, "sha256sum", rehash)
    assert data.path(SMALL) == SHARED / SMALL
    with pytest.raises(AssertionError, match="hashed again"):
        data.locate(SMALL, recheck=True)


def test_tampered_copy_is_a_one_line_error_and_never_replaced(isolated):
    copy = isolated / SMALL
    copy.parent.mkdir(parents=True)
    shutil.copy(SHARED / SMALL, copy)
    assert data.path(SMALL) == copy  # verified
    blob = bytearray(copy.read_bytes())
    blob[5] ^= 1
    copy.write_bytes(bytes(blob))  # tampered in place, right after a verified read
    with pytest.raises(ValueError) as err:
        data.path(SMALL)
    assert SMALL in str(err.value) and str(copy) in str(err.value) and "\n" not in str(err.value)
    assert copy.read_bytes() == bytes(blob)


def test_missing_file_offline_says_what_to_download_and_where(isolated):
    with pytest.raises(FileNotFoundError) as err:
        data.path("localization/setHARD.fasta")
    msg = str(err.value)
    assert "\n" not in msg and "no network in tests" in msg
    assert data.registry()["localization/setHARD.fasta"].urls[0] in msg
    assert str(isolated / "localization/setHARD.fasta") in msg
    with pytest.raises(FileNotFoundError, match="tttlab data prepare dms/A4_HUMAN_Seuma_2022"):
        data.path("dms/A4_HUMAN_Seuma_2022.csv.gz")  # derived: no URL, a recipe


def test_download_is_hash_checked_and_falls_back(isolated, monkeypatch):
    name = "structures/dms_targets/1PGA.pdb"  # GitHub first, RCSB second

    def rcsb_only(url, output_file, pooch, check_only=False):
        if "rcsb" not in url:
            raise requests.exceptions.HTTPError("404")
        shutil.copy(SHARED / name, output_file)

    monkeypatch.setattr(data, "_downloader", rcsb_only)
    assert data.path(name) == isolated / name and data.locate(name) == isolated / name

    def corrupt(url, output_file, pooch, check_only=False):
        Path(output_file).write_text("HEADER not the entry\n")

    monkeypatch.setattr(data, "_downloader", corrupt)
    with pytest.raises(FileNotFoundError, match="download failed"):
        data.path("structures/pfam40/1TEN_A.pdb")
    assert not (isolated / "structures/pfam40/1TEN_A.pdb").exists()


def test_cli_list_runs_offline_and_shows_every_dataset(capsys, monkeypatch):
    monkeypatch.setattr(data, "_downloader", offline)
    assert run_cli(["data", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["dataset"] for r in rows} == {e.dataset for e in data.registry().values()}
    assert sum(r["files"] for r in rows) == 89
    assert all(r["state"] == f"{r['files']} verified" for r in rows)
    assert run_cli(["data", "list", "--files"]) == 0
    out = capsys.readouterr().out
    assert "dms/A4_HUMAN_Seuma_2022.csv.gz" in out and "pfam40/3MQI_A.pdb" in out


def test_cli_verify_and_fetch(isolated, capsys):
    assert run_cli(["data", "verify", "localization"]) == 1  # all three missing: not a success
    assert "0 verified, 3 missing, 0 MISMATCH" in capsys.readouterr().out
    (isolated / "localization").mkdir(parents=True)
    (isolated / "localization/setHARD.fasta").write_text(">x\nMK\n")
    assert run_cli(["data", "verify", "localization"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert run_cli(["data", "fetch", "--all"]) == 1  # offline: every file fails, one line each
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 89 and all(line.startswith("failed") for line in lines)
    with pytest.raises(ValueError, match="NAME"):
        run_cli(["data", "fetch"])


def test_read_fasta_plain_and_gzipped(tmp_path):
    text = ">a first\nMKV\nLA\n\n>b\nGG\n"
    (tmp_path / "x.fasta").write_text(text)
    with gzip.open(tmp_path / "x.fasta.gz", "wt") as handle:
        handle.write(text)
    expected = [("a first", "MKVLA"), ("b", "GG")]
    assert read_fasta(tmp_path / "x.fasta") == expected
    assert read_fasta(tmp_path / "x.fasta.gz") == expected


def test_prepare_tps_table_is_byte_identical(isolated):
    source = SHARED / "terpene_synthases/TPS-Nov19_2023_verified.csv"
    out = prepare.prepare("terpene_synthases/tps_proteins.csv", source=source)
    assert out == isolated / "terpene_synthases/tps_proteins.csv"
    assert data.sha256sum(out) == data.registry()["terpene_synthases/tps_proteins.csv"].sha256


def test_prepare_into_an_unwritable_folder_is_a_one_line_error(isolated, monkeypatch):
    isolated.parent.mkdir(parents=True, exist_ok=True)
    isolated.write_text("a file where the data folder should be")  # mkdir fails, even as root
    source = SHARED / "terpene_synthases/TPS-Nov19_2023_verified.csv"
    with pytest.raises(ValueError, match="cannot write") as err:
        prepare.prepare("terpene_synthases/tps_proteins.csv", source=source)
    assert "\n" not in str(err.value)


def test_prepare_mavenn_transform_and_refusal(isolated, monkeypatch, capsys):
    rows = ("set,dist,y,dy,x\ntraining,0,0.0,0.1,ACD\ntest,1,-1.5,0.2,GCD\n"
            "training,1,0.25,0.3,AED\n")
    fake = isolated.parent / "mavenn.whl"
    with zipfile.ZipFile(fake, "w") as whl:
        whl.writestr("mavenn/examples/datasets/amyloid_data.csv.gz", gzip.compress(rows.encode()))
    monkeypatch.setattr(prepare, "wheel", lambda recipe, source=None: fake)
    built = prepare.build("dms/A4_HUMAN_Seuma_2022.csv.gz")
    table = gzip.decompress(built["dms/A4_HUMAN_Seuma_2022.csv.gz"]).decode().splitlines()
    assert table == ["mutant,mutated_sequence,DMS_score,n_mutations,mavenn_set,DMS_score_stderr",
                     "A1G,GCD,-1.5,1,test,0.2", "C2E,AED,0.25,1,training,0.3"]
    assert built["dms/A4_HUMAN_Seuma_2022.wt.fasta"] == b">A4_HUMAN_Seuma_2022\nACD\n"
    prepare._build_unit.cache_clear()
    with pytest.raises(ValueError, match="differs from the registered SHA-256"):
        prepare.prepare("dms/A4_HUMAN_Seuma_2022.wt.fasta")
    assert not (isolated / "dms").exists()
    prepare._build_unit.cache_clear()
    assert run_cli(["data", "prepare", "dms/BLAT_ECOLX_Stiffler_2015"]) == 1
    out = capsys.readouterr().out
    assert out.count("not automated") == 2 and "column 2500" in out


@pytest.mark.skipif(not os.environ.get("TTTLAB_WHEELS"), reason="set TTTLAB_WHEELS to a folder "
                    "with the mavenn 1.1.4 and mutagenesis-visualization 1.0.0 wheels")
@pytest.mark.parametrize("name", ["dms/A4_HUMAN_Seuma_2022.csv.gz",
                                  "dms/A4_HUMAN_Seuma_2022.wt.fasta",
                                  "structures/dms_targets/1ERM_A.pdb",
                                  "dms/SUMO1_HUMAN_Weile_2017.csv.gz"])
def test_prepare_from_wheels_is_byte_identical(name):
    if "SUMO1" in name:
        pytest.importorskip("openpyxl")
    blob = prepare.build(name, os.environ["TTTLAB_WHEELS"])[name]
    assert hashlib.sha256(blob).hexdigest() == data.registry()[name].sha256


def test_fasta_with_byte_order_mark_keeps_its_first_record(tmp_path):
    f = tmp_path / "bom.fasta"
    f.write_bytes("\ufeff>first\nMKT\n>second\nAC\n".encode("utf-8"))
    assert read_fasta(f) == [("first", "MKT"), ("second", "AC")]
    g = tmp_path / "bom.fasta.gz"
    g.write_bytes(gzip.compress(f.read_bytes()))
    assert read_fasta(g) == [("first", "MKT"), ("second", "AC")]
