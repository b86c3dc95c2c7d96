"""``tttlab fold``: ESMFold before and after TTT of its language model, the step with the highest
mean pLDDT kept, PDB files written, TM-score and LDDT against an experimental chain on request."""

from __future__ import annotations

import json
import re

from tttlab.cli.options import CLIError, read_sequences


def _fold(args) -> int:
    try:
        from tttlab.engine.folding import load_folding_model
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise CLIError(str(err)) from None
    from tttlab.data.structures import read_chain
    from tttlab.studies.folding import fold_with_ttt, write_pdbs

    if args.ttt_steps < 0:
        raise CLIError("--ttt-steps must be >= 0")
    if args.chain and not args.pdb:
        raise CLIError("--chain needs --pdb")
    records = read_sequences(args.sequence, args.fasta)
    if args.pdb:
        if len(records) > 1:
            raise CLIError("--pdb scores one protein: give a sequence or a FASTA with one record")
        read_chain(args.pdb, args.chain)  # a missing file or chain stops here, before any work
    try:
        model = load_folding_model(args.model, lm_head=args.lm_head, device=args.device,
                                   chunk_size=args.chunk_size, backend=args.backend)
    except ImportError as err:
        raise CLIError(str(err)) from None
    for name, seq in records:
        result = fold_with_ttt(model, seq, reference=args.pdb, chain=args.chain,
                               keep_all=args.all_steps, progress=not args.json,
                               steps=args.ttt_steps, seed=args.seed)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        row = {"id": name, **result.summary(),
               **write_pdbs(result, args.out, safe, every_step=args.all_steps),
               "seconds": round(result.seconds, 2)}
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            line = (f"{name}\tL={len(seq)}\tpLDDT {row['plddt_before']:.2f} -> "
                    f"{row['plddt_after']:.2f} (step {row['best_step']} of {args.ttt_steps})")
            if args.pdb:
                line += (f"\tTM-score {row['tm_score_before']:.3f} -> {row['tm_score_after']:.3f}"
                         f"\tLDDT {row['lddt_before']:.3f} -> {row['lddt_after']:.3f}")
            print(f"{line}\t{row['pdb']}\t({row['seconds']:.1f} s)", flush=True)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "fold", help="ESMFold before and after TTT (best step by pLDDT), scored against a PDB",
        description="Customise ESMFold's language model to each protein (published recipe: LoRA, "
                    "30 steps), fold after every step, keep the step with the highest mean pLDDT "
                    "(step 0 included) and write its PDB; with --pdb, TM-score and LDDT before "
                    "and after.")
    p.add_argument("sequence", nargs="?", help="a protein sequence (one-letter codes)")
    p.add_argument("--fasta", help="FASTA file with one or more sequences")
    p.add_argument("--model", default="esmfold_v1",
                   help="esmfold_v1 (transformers cache, downloaded when missing) or a folder "
                        "saved with EsmForProteinFolding.save_pretrained")
    p.add_argument("--lm-head", default=None,
                   help="masked-LM head of the language model: a transformers EsmForMaskedLM "
                        "folder, an ESM-2 name or a fair-esm .pt of the same size (default for "
                        "esmfold_v1: esm2_t36_3B_UR50D)")
    p.add_argument("--backend", choices=("transformers", "fair-esm"), default="transformers",
                   help="transformers' EsmForProteinFolding (default, no OpenFold) or fair-esm's "
                        "esmfold_v1 (needs OpenFold; brings its own LM head)")
    p.add_argument("--pdb", default=None, help="experimental structure (PDB/mmCIF) to score against")
    p.add_argument("--chain", default=None, help="its chain (default: the first protein chain)")
    p.add_argument("--ttt-steps", type=int, default=30, help="TTT steps (default 30; 0 = none)")
    p.add_argument("--out", default="tttlab_fold", help="folder for the PDB files")
    p.add_argument("--all-steps", action="store_true", help="also write every step's PDB")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="trunk chunk size for long proteins (less GPU memory, same result)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")
    p.set_defaults(func=_fold)
