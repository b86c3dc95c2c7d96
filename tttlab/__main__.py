"""``python -m tttlab ...``: the same as the ``tttlab`` command."""

from tttlab.cli.main import main

raise SystemExit(main())
