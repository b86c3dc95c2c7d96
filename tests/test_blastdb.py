"""The BLAST v4 reader and the .deb unpacker behind the Swiss-Prot recipe (fixture: makeblastdb)."""

import io
import lzma
import tarfile
from pathlib import Path

import pytest

from tttlab.data.blastdb import BlastFormatError, deb_members, read_protein_db
from tttlab.data.prepare import swissprot_fasta

FIXTURE = Path(__file__).parent / "fixtures" / "blastdb"
RECORDS = [("P12345|GO:0005737,GO:0016020", "MKTAYIAKQRQISFVKSHFSRQ"),
           ("Q9XYZ1|GO:0003677", "ACDEFGHIKLMNPQRSTVWYXUBZOJ"),
           ("P12345|GO:0005515", "MKTAYIAKQRQISFVKSHFSRQ"), ("A0A000|", "M")]


def _files():
    return {ext: (FIXTURE / f"tiny.{ext}").read_bytes() for ext in ("pin", "phr", "psq")}


def test_reads_makeblastdb_output_exactly():
    assert read_protein_db(_files(), "tiny") == RECORDS


def test_merge_keeps_first_accession_in_database_order():
    other = [("Q9XYZ1|GO:1", "ACDEFGHIKLMNPQRSTVWYXUBZOJ"), ("B0RED7|GO:2", "MA")]
    assert swissprot_fasta([read_protein_db(_files()), other]) == (
        ">P12345\nMKTAYIAKQRQISFVKSHFSRQ\n>Q9XYZ1\nACDEFGHIKLMNPQRSTVWYXUBZOJ\n>A0A000\nM\n"
        ">B0RED7\nMA\n")


@pytest.mark.parametrize("ext, cut", [("pin", 30), ("psq", 40), ("phr", 100), ("pin", 3)])
def test_truncated_files_give_one_line_errors(ext, cut):
    files = _files()
    files[ext] = files[ext][:cut]
    with pytest.raises(BlastFormatError) as err:
        read_protein_db(files, "tiny")
    assert "\n" not in str(err.value) and ("truncated" in str(err.value) or "short" in str(err.value)
                                           or "header" in str(err.value))


def test_foreign_files_rejected():
    files = _files()
    with pytest.raises(BlastFormatError, match="version"):
        read_protein_db({**files, "pin": b"\x00\x00\x00\x05" + files["pin"][4:]})
    with pytest.raises(BlastFormatError, match="nucleotide"):
        read_protein_db({**files, "pin": files["pin"][:4] + b"\x00\x00\x00\x00" + files["pin"][8:]})
    with pytest.raises(BlastFormatError, match="missing"):
        read_protein_db({"pin": files["pin"]})


def _deb(path: Path, members: dict[str, bytes]) -> Path:
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    parts = [("debian-binary", b"2.0\n"), ("control.tar.xz", b"x"),
             ("data.tar.xz", lzma.compress(tar_bytes.getvalue()))]
    out = b"!<arch>\n"
    for name, blob in parts:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(blob):<10}`\n".encode() + blob
        out += b"\n" * (len(blob) % 2)
    path.write_bytes(out)
    return path


def test_deb_members_streams_the_wanted_files(tmp_path):
    deb = _deb(tmp_path / "x.deb", {"usr/share/a.pin": b"AB", "usr/share/b": b"C"})
    assert deb_members(deb, {"usr/share/a.pin"}) == {"usr/share/a.pin": b"AB"}
    with pytest.raises(BlastFormatError, match="not in the package"):
        deb_members(deb, {"usr/share/missing"})
    (tmp_path / "bad.deb").write_bytes(b"PK\x03\x04")
    with pytest.raises(BlastFormatError, match="not a Debian package"):
        deb_members(tmp_path / "bad.deb", {"a"})
    (tmp_path / "cut.deb").write_bytes(deb.read_bytes()[:90])
    with pytest.raises(BlastFormatError):
        deb_members(tmp_path / "cut.deb", {"usr/share/a.pin"})
