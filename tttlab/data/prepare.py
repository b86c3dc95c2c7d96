"""Rebuild the data files tttlab derived in format only (``tttlab data prepare``), byte for byte.

Automated: the mavenn 1.1.4 assays (Tareen et al., Genome Biol 2022), the mutagenesis-visualization
1.0.0 assays and PDB files (its DMS_others.xlsx compiles Gray et al., Cell Syst 2018), the
per-protein TPS table and Swiss-Prot 2014_01 (from Debian's ``metastudent-data`` BLAST databases); each output must match the registry SHA-256 before it is written. The other
derived files come with the exact manual steps in ``MANUAL``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import zipfile
import zlib
from collections import Counter
from functools import lru_cache
from pathlib import Path

from tttlab.common.files import atomic_write
from tttlab.data import registry as data

#: recipe -> (pip requirement, wheel file name, wheel SHA-256)
WHEELS = {
    "mavenn": ("mavenn==1.1.4", "mavenn-1.1.4-py3-none-any.whl",
               "b54077ee40a94892ace26b609b1b6778bc906e14483d7e74f8258c9731871e57"),
    "mutvis": ("mutagenesis-visualization==1.0.0",
               "mutagenesis_visualization-1.0.0-py3-none-any.whl",
               "f668e575c885e2f118545c16cc464c2bee3be0e5a139e0ae6c3639d7dbda80e0"),
}
#: assay -> (mavenn data set, extra columns (source, output), gzip mtime of the registered file)
MAVENN = {
    "SPG1_STRSG_Olson_2014": ("gb1", (("input_ct", "input_ct"), ("selected_ct", "selected_ct")),
                              1795553325),
    "TADBP_HUMAN_Bolognesi_2019": ("tdp43", (("dy", "DMS_score_stderr"),), 1795553331),
    "A4_HUMAN_Seuma_2022": ("amyloid", (("dy", "DMS_score_stderr"),), 1795553332),
}
UBIQUITIN = "yeast ubiquitin (residues 1-76 of RL40A_YEAST) UniProt residues 1-76"
#: assay -> (sheet of DMS_others.xlsx, score column, extra columns kept, wt.fasta description)
MUTVIS = {
    "SUMO1_HUMAN_Weile_2017": ("SUMO1", "DMS", (),
                               "SUMO1 (human), full length UniProt residues 1-101"),
    "UBC9_HUMAN_Weile_2017": ("UBE2I", "DMS", ("DMS_flipped",),
                              "UBE2I/UBC9 (human), full length UniProt residues 1-159"),
    "RL40A_YEAST_Roscoe_2013": ("UBI4", "DMS_(a)", (), UBIQUITIN),
    "RL40A_YEAST_Roscoe_2014": ("UBI4", "DMS_limiting_(b)", (), UBIQUITIN),
    "IF1_ECOLI_Kelsic_2016": ("infA", "DMS", (), "translation initiation factor IF-1 (E. coli), "
                              "full length UniProt residues 1-72"),
}
MUTVIS_PDB = {"1ERM_A.pdb": "1erm.pdb", "1A5R_A.pdb": "1a5r.pdb", "2GRN_A.pdb": "2grn.pdb"}
TPS_COLUMNS = {"kingdom": "Kingdom (plant, fungi, bacteria)", "species": "Species",
               "tps_types": "Type (mono, sesq, di, …)", "tps_class": "Class (I or II)",
               "substrates": "Substrate (including stereochemistry)",
               "substrate_smiles_no_stereo": "SMILES_substrate_canonical_no_stereo"}
#: Debian package holding Swiss-Prot 2014_01 as three BLAST databases (file name, SHA-256)
METASTUDENT_DEB = ("metastudent-data_2.0.1-8_all.deb",
                   "020ed0c560a5ba96f39c434399b3ecf0fa790a4776c4aac24458f837969ae54b")
METASTUDENT_DBS = tuple(f"usr/share/metastudent-data/dataset_201401/{o}/goasp.fasta"
                        for o in ("BPO", "MFO", "CCO"))
AUTOMATED = ("mavenn", "mutvis", "tps", "metastudent")
GH = "https://github.com"
GZIP_STEP = ("gzip the csv with Python's gzip.GzipFile(filename='<assay>.csv', compresslevel=9, "
             "mtime=0 (BLAT: 1795553344)), one flush() before close")
MANUAL = {
    "esm-blat": (
        f"download {GH}/facebookresearch/esm/raw/2b369911bb5b4b0dda914521b9475cad1656b2ac/"
        "examples/variant-prediction/data/BLAT_ECOLX_Ranganathan2015.csv (MIT); write columns "
        "mutant, mutated_sequence (the 286-aa TEM-1 precursor, UniProt P62593, with the "
        "substitution applied), DMS_score (its column 2500), n_mutations (1); save the precursor "
        f"as BLAT_ECOLX_Stiffler_2015.wt.fasta; {GZIP_STEP}"),
    "dms2structure-gb1": (
        f"download {GH}/lehner-lab/DMS2structure/raw/3c1976b78a743d4d4c73921f047648500e671c8e/"
        "GB1/dataset/Olson2014_TableS2_singles.txt and Olson2014_TableS2_wildtype.txt (MIT); "
        "DMS_score = ln[(selected_ct/input_ct)/(3041819/1759616)]; columns mutant (on the 55-aa "
        "wt.fasta: Olson residue 2 = 1), mutated_sequence, DMS_score, n_mutations, mutant_uniprot "
        f"(+227), mutant_olson (Olson numbering), input_ct, selected_ct; {GZIP_STEP}"),
    "deepsequence": (
        f"download {GH}/debbiemarkslab/DeepSequence/raw/fd5c272b273385c0b87fce9dec410a9d74463393/"
        "examples/mutations/PABP_YEAST_Fields2013-singles.csv (DMS_score = column linear, "
        "score_log = log) and DLG4_RAT_Ranganathan2012.csv (DMS_score = CRIPT, score_Tm2F = Tm2F) "
        "(MIT); drop synonymous and unscored rows; mutant numbered on the wt.fasta (UniProt "
        f"126-200 and 311-393), mutant_uniprot on UniProt; {GZIP_STEP}"),
    "flip": (
        f"download {GH}/J-SNACKKB/FLIP/raw/62cace8735f5610e2743cf06ce0f944b37fffaa6/splits/TASK/"
        "splits.zip, TASK = secondary_structure or conservation (AFL-3.0); unzip "
        "splits/sequences.fasta and splits/sampled.fasta; run `touch -d @1795553417 FILE && gzip "
        "-9 FILE` on each (GNU gzip 1.12 gives the registered bytes); put them in "
        "sequences/flip_TASK/"),
    "families": (
        "gzip -9 (unchanged content) the alignment named in families/PROVENANCE.md: PoET "
        f"{GH}/OpenProteinAI/PoET/raw/e8fb041386c3d8233afaea48f849d355fdda39cf/data/"
        "BLAT_ECOLX_ColabFold_2202.a3m (MIT); ProteinGym's SPG1_STRSG_full_b0.1.a2m (MIT); "
        "pagnani/ArDCAData data/PF00595/PF00595_mgap6.fasta.gz (MIT); the PF00076 Pfam seed of "
        "HMMER's example files (CC0); a byte-identical copy is checked by SHA-256"),
    "structure-map": (
        "derived by the tttlab authors, no public source: per assay, a global alignment of "
        "<assay>.wt.fasta to the observed residues of its chain in structures/dms_targets/; copy "
        "it from a complete tttlab data folder"),
}


def gzip_bytes(text: str, filename: str, mtime: int) -> bytes:
    """Gzip ``text`` exactly as the registered tables were written (level 9, one sync flush)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename=filename, mode="wb", fileobj=buffer, compresslevel=9,
                       mtime=mtime) as handle:
        handle.write(text.encode())
        handle.flush()
    return buffer.getvalue()


def _verified_source(filename: str, sha: str, source, command: list[str], shown: str,
                     origin: str, in_folder: bool = False) -> Path:
    """``source`` (the file or its folder), else ``command`` (``shown`` in errors; run inside the
    cache folder when ``in_folder``) fetches ``filename`` into the cache once; either way the file
    must have the published SHA-256 (``origin`` names the publisher)."""
    if source is not None:
        file = Path(source) / filename if Path(source).is_dir() else Path(source)
    else:
        folder = data.cache_dir() / "sources"
        file = folder / filename
        if not file.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            run = subprocess.run(command, cwd=folder if in_folder else None, capture_output=True,
                                 text=True)
            if run.returncode or not file.is_file():
                tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
                raise FileNotFoundError(f"`{shown}` failed ({tail}); download {filename} and pass "
                                        "it with --source")
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file (expected {filename})")
    if data.sha256sum(file) != sha:
        raise ValueError(f"{file}: SHA-256 differs from {origin} {filename} ({sha[:12]}...)")
    return file


def wheel(recipe: str, source: str | os.PathLike | None = None) -> Path:
    """The verified source wheel of a recipe: ``source`` (a wheel or its folder), else pip's."""
    requirement, filename, sha = WHEELS[recipe]
    folder = data.cache_dir() / "sources"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--dest", str(folder), requirement]
    return _verified_source(filename, sha, source, cmd, f"pip download {requirement}",
                            "the published")


def _mavenn(assay: str, source) -> dict[str, bytes]:
    member, extra, mtime = MAVENN[assay]
    with zipfile.ZipFile(wheel("mavenn", source)) as whl:
        raw = whl.read(f"mavenn/examples/datasets/{member}_data.csv.gz")
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(raw).decode())))
    wt = "".join(Counter(col).most_common(1)[0][0] for col in zip(*(r["x"] for r in rows)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["mutant", "mutated_sequence", "DMS_score", "n_mutations", "mavenn_set",
                     *(name for _, name in extra)])
    for row in rows:  # wild type = per-position consensus; its own rows are dropped
        muts = [f"{a}{i}{b}" for i, (a, b) in enumerate(zip(wt, row["x"]), 1) if a != b]
        if muts:
            writer.writerow([":".join(muts), row["x"], row["y"], len(muts), row["set"],
                             *(row[col] for col, _ in extra)])
    return {f"dms/{assay}.csv.gz": gzip_bytes(out.getvalue(), f"{assay}.csv", mtime),
            f"dms/{assay}.wt.fasta": f">{assay}\n{wt}\n".encode()}


def _mutvis(assay: str, source) -> dict[str, bytes]:
    import pandas as pd

    sheet, column, extra, description = MUTVIS[assay]
    start, end = map(int, re.search(r"residues (\d+)-(\d+)$", description).groups())
    reference = pd.read_csv(data.path("dms/ProteinGym_DMS_substitutions_reference.csv"))
    wt = reference.set_index("DMS_id").loc[assay, "target_seq"][start - 1:end]
    with zipfile.ZipFile(wheel("mutvis", source)) as whl:
        xlsx = io.BytesIO(whl.read("mutagenesis_visualization/data/DMS_others.xlsx"))
    try:
        table = pd.read_excel(xlsx, sheet_name=sheet)
    except ImportError:
        raise ImportError("reading DMS_others.xlsx needs openpyxl: pip install openpyxl") from None
    table = table[table[column].notna()]
    variant = table["variant"].astype(str)
    keep = (variant.str[0] != variant.str[-1]) & variant.str[-1].isin(list("ACDEFGHIKLMNPQRSTVWY"))
    table, variant = table[keep], variant[keep]
    pos = variant.str[1:-1].astype(int).tolist()
    if any(wt[p - 1] != v[0] for p, v in zip(pos, variant)):
        raise ValueError(f"{assay}: a wild-type residue of the source differs from the sequence")
    pairs = list(zip(pos, variant))
    out = pd.DataFrame({"mutant": variant.values,
                        "mutated_sequence": [wt[:p - 1] + v[-1] + wt[p:] for p, v in pairs],
                        "DMS_score": table[column].values, "n_mutations": 1,
                        "mutant_uniprot": [f"{v[0]}{p + start - 1}{v[-1]}" for p, v in pairs]})
    for col in extra:
        out[col] = table[col].values
    text = out.to_csv(index=False, lineterminator="\n")
    return {f"dms/{assay}.csv.gz": gzip_bytes(text, f"{assay}.csv", 0),
            f"dms/{assay}.wt.fasta": f">{assay} {description}\n{wt}\n".encode()}


def _mutvis_pdb(name: str, source) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel("mutvis", source)) as whl:  # copied unchanged from the package
        return {name: whl.read(f"mutagenesis_visualization/data/{MUTVIS_PDB[Path(name).name]}")}


def _tps(name: str, source) -> dict[str, bytes]:
    import pandas as pd

    csv_source = source if str(source).endswith(".csv") else None  # else a wheel folder: ignore
    src = pd.read_csv(csv_source or data.path("terpene_synthases/TPS-Nov19_2023_verified.csv"))
    src["uid"] = src["Uniprot ID"].astype(str).str.strip()
    rows = []
    for uid, group in src.groupby("uid", sort=True):
        seq = group["Amino acid sequence"].iloc[0]  # first listed (one ID has two sequences)
        row = {"uniprot_id": uid, "sequence": seq}
        for key, col in TPS_COLUMNS.items():  # sorted, ';'-joined set of the source values
            values = sorted({str(v).strip() for v in group[col].dropna() if str(v).strip()})
            row[key] = ";".join(values) or None
        rows.append({**row, "n_reaction_rows": len(group), "length": len(seq)})
    return {name: pd.DataFrame(rows).to_csv(index=False, lineterminator="\n").encode()}


def metastudent_deb(source=None) -> Path:
    """The verified ``metastudent-data`` package: ``source`` (the .deb or its folder), else one
    fetched with ``apt-get download metastudent-data`` into the cache."""
    filename, sha = METASTUDENT_DEB
    return _verified_source(filename, sha, source, ["apt-get", "download", "metastudent-data=2.0.1-8"],
                            "apt-get download metastudent-data", "Debian's", in_folder=True)


def swissprot_fasta(databases: list[list[tuple[str, str]]]) -> str:
    """The merged FASTA text: records of the databases in order, title cut at ``|``, the first
    occurrence of each accession kept (PROVENANCE.md of ``sequences/swissprot_2014_01``)."""
    seen, lines = set(), []
    for records in databases:
        for title, seq in records:
            accession = title.split("|", 1)[0]
            if accession not in seen:
                seen.add(accession)
                lines.append(f">{accession}\n{seq}\n")
    return "".join(lines)


def _metastudent(name: str, source) -> dict[str, bytes]:
    from tttlab.data.blastdb import deb_members, read_protein_db

    members = deb_members(metastudent_deb(source),
                          {f"{db}.{ext}" for db in METASTUDENT_DBS for ext in ("pin", "phr", "psq")})
    databases = [read_protein_db({ext: members.pop(f"{db}.{ext}") for ext in ("pin", "phr", "psq")},
                                 db) for db in METASTUDENT_DBS]
    text = swissprot_fasta(databases).encode()
    return {name: gzip.compress(text, compresslevel=9, mtime=0)}


def build(name: str, source=None) -> dict[str, bytes]:
    """Rebuild a registered file (and its sibling from the same source) in memory."""
    item = data.entry(name)
    if item.recipe not in AUTOMATED:
        steps = MANUAL.get(item.recipe, "it has a download URL: use `tttlab data fetch`")
        raise ValueError(f"{item.name}: `prepare` is not automated for it: {steps}")
    assay = Path(item.name).name.split(".")[0]
    unit = item.name if item.name.endswith((".pdb", ".csv", ".fasta.gz")) else assay
    return _build_unit(item.recipe, unit, None if source is None else str(source))


@lru_cache(maxsize=1)  # an assay's .csv.gz and .wt.fasta come from one pass
def _build_unit(recipe: str, unit: str, source: str | None) -> dict[str, bytes]:
    if recipe == "mavenn":
        return _mavenn(unit, source)
    if recipe == "tps":
        return _tps(unit, source)
    if recipe == "metastudent":
        return _metastudent(unit, source)
    return _mutvis_pdb(unit, source) if unit.endswith(".pdb") else _mutvis(unit, source)


def prepare(name: str, source=None) -> Path:
    """Rebuild a derived file into :func:`tttlab.data.download_dir` after checking its SHA-256.

    Parameters
    ----------
    name : str
        A registered file with an automated recipe (``mavenn``, ``mutvis``, ``tps``, ``metastudent``).
    source : path, optional
        Local source (a wheel, the TPS csv, the metastudent-data .deb) instead of `pip download`,
        `apt-get download` or the registry copy.

    Returns
    -------
    pathlib.Path
        The verified file; an existing verified copy is returned untouched.
    """
    item = data.entry(name)
    found = data.locate(item.name)
    if found:
        return found
    blob = build(item.name, source)[item.name]
    target = data.download_dir() / item.name
    if len(blob) != item.size or hashlib.sha256(blob).hexdigest() != item.sha256:
        raise ValueError(f"{item.name}: the rebuilt file differs from the registered SHA-256 "
                         f"(zlib {zlib.ZLIB_RUNTIME_VERSION}); nothing was written")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda handle: handle.write(blob))
    except OSError as err:
        raise ValueError(f"{item.name}: cannot write {target} ({err.strerror or err}); set "
                         "TTTLAB_DATA_DIR to a writable folder") from None
    return target


def prepare_cli(args) -> int:
    """``tttlab data prepare NAME|--all``: rebuild automated files, print steps for the rest."""
    if (args.name is None) != args.all:
        raise ValueError("give a NAME (file, assay or dataset) or --all")
    missing = 0
    for item in [e for e in data.select(args.name) if e.recipe or not args.all]:
        found = data.locate(item.name)
        if found or item.recipe not in AUTOMATED:
            steps = MANUAL.get(item.recipe, "it has a URL: use `tttlab data fetch`")
            note = found or f"not automated: {steps}"
            print(f"{'ok' if found else 'manual':8} {item.name}  {note}")
            missing += found is None
            continue
        try:
            print(f"ok       {item.name}  {prepare(item.name, args.source)}", flush=True)
        except (OSError, ValueError, ImportError) as err:
            if not args.all:
                raise
            missing += 1
            print(f"failed   {item.name}  {str(err).splitlines()[0]}", flush=True)
    return 1 if missing else 0
