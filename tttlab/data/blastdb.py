"""Read NCBI BLAST protein databases (format version 4) without BLAST, and Debian ``.deb`` archives.

A v4 protein database is three files: ``.pin`` (title, date, counts and the byte offsets of every
header and sequence), ``.psq`` (one byte per residue in NCBIstdaa coding, a 0 byte between
sequences) and ``.phr`` (one ASN.1 BER ``Blast-def-line-set`` per sequence). Only what the
Swiss-Prot recipe needs is read: each record's title and sequence.
"""

from __future__ import annotations

import io
import lzma
import struct
import tarfile
from pathlib import Path

import numpy as np

#: NCBIstdaa code -> one-letter residue ('-' gap, '*' stop; 28+ are not used by protein databases)
NCBISTDAA = "-ABCDEFGHIKLMNPQRSTVWXYZU*OJ"


class BlastFormatError(ValueError):
    """A file that is not (or no longer) a complete BLAST v4 protein database."""


def _read_pin(pin: bytes, name: str) -> tuple[int, np.ndarray, np.ndarray]:
    try:
        version, kind = struct.unpack_from(">ii", pin, 0)
        if version != 4:
            raise BlastFormatError(f"{name}: BLAST database format version {version}, not 4")
        if kind != 1:
            raise BlastFormatError(f"{name}: a nucleotide database, not a protein one")
        pos = 8
        for _ in range(2):  # title, date: 4-byte big-endian length, then the text
            (length,) = struct.unpack_from(">i", pin, pos)
            pos += 4 + length
        (n,) = struct.unpack_from(">i", pin, pos)
        pos += 4 + 8 + 4  # number of sequences, total residues (8 bytes), longest sequence
        need = pos + 8 * (n + 1)
        if n < 0 or len(pin) < need:
            raise BlastFormatError(f"{name}: truncated index ({len(pin)} of {need} bytes)")
        headers = np.frombuffer(pin, ">u4", n + 1, pos).astype(np.int64)
        seqs = np.frombuffer(pin, ">u4", n + 1, pos + 4 * (n + 1)).astype(np.int64)
    except struct.error:
        raise BlastFormatError(f"{name}: too short for a BLAST index file") from None
    return n, headers, seqs


def _ber_length(buf: bytes, pos: int) -> tuple[int, int]:
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    return int.from_bytes(buf[pos + 1:pos + 1 + size], "big"), pos + 1 + size


def _title(header: bytes, name: str, i: int) -> str:
    """The title (first ``Blast-def-line``'s VisibleString) of one BER-coded header."""
    # SEQUENCE (indefinite) OF SEQUENCE (indefinite) { [0] (indefinite) VisibleString ... }
    if header[:6] != b"\x30\x80\x30\x80\xa0\x80" or len(header) < 8 or header[6] != 0x1A:
        raise BlastFormatError(f"{name}: header {i} is not a titled Blast-def-line-set")
    length, start = _ber_length(header, 7)
    if start + length > len(header):
        raise BlastFormatError(f"{name}: header {i} is truncated")
    return header[start:start + length].decode("ascii", errors="replace")


def read_protein_db(files: dict[str, bytes], name: str = "database") -> list[tuple[str, str]]:
    """(title, sequence) of every record of a v4 protein database given as the bytes of its
    ``"pin"``, ``"phr"`` and ``"psq"`` files; a truncated or foreign file raises
    :class:`BlastFormatError` with a one-line message."""
    missing = [k for k in ("pin", "phr", "psq") if k not in files]
    if missing:
        raise BlastFormatError(f"{name}: missing .{', .'.join(missing)}")
    n, hoff, soff = _read_pin(files["pin"], name + ".pin")
    phr, psq = files["phr"], files["psq"]
    if hoff[-1] > len(phr):
        raise BlastFormatError(f"{name}.phr: truncated ({len(phr)} of {hoff[-1]} bytes)")
    if soff[-1] > len(psq):
        raise BlastFormatError(f"{name}.psq: truncated ({len(psq)} of {soff[-1]} bytes)")
    if np.any(np.diff(hoff) < 0) or np.any(np.diff(soff) < 1):
        raise BlastFormatError(f"{name}.pin: offsets are not increasing")
    codes = np.frombuffer(psq, np.uint8)
    if codes.size and codes.max() >= len(NCBISTDAA):
        raise BlastFormatError(f"{name}.psq: residue code {codes.max()} is not NCBIstdaa")
    letters = np.frombuffer(NCBISTDAA.encode(), np.uint8)[codes].tobytes().decode("ascii")
    return [(_title(phr[hoff[i]:hoff[i + 1]], name + ".phr", i), letters[soff[i]:soff[i + 1] - 1])
            for i in range(n)]


def deb_members(deb: str | Path, wanted: set[str]) -> dict[str, bytes]:
    """Bytes of the ``wanted`` paths (as in the package, without the leading ``./``) inside the
    ``data.tar.xz`` of a Debian package (an ``ar`` archive), read in one streaming pass."""
    deb = Path(deb)
    with open(deb, "rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise BlastFormatError(f"{deb}: not a Debian package (no ar signature)")
        while True:
            head = handle.read(60)
            if len(head) < 60:
                raise BlastFormatError(f"{deb}: no data.tar.xz member (truncated package?)")
            member, size = head[:16].decode().strip().rstrip("/"), int(head[48:58])
            if member == "data.tar.xz":
                break
            handle.seek(size + size % 2, io.SEEK_CUR)
        out = {}
        try:
            with tarfile.open(fileobj=lzma.LZMAFile(io.BytesIO(handle.read(size))), mode="r|") as tar:
                for info in tar:
                    path = info.name.removeprefix("./")
                    if path in wanted and info.isfile():
                        out[path] = tar.extractfile(info).read()
        except (lzma.LZMAError, tarfile.TarError, EOFError) as err:
            raise BlastFormatError(f"{deb}: damaged data.tar.xz ({err})") from None
    absent = sorted(wanted - out.keys())
    if absent:
        raise BlastFormatError(f"{deb}: {absent[0]} not in the package")
    return out
