"""The entry point of the fleet command (the zipapp's and the installed script's).

`fleet --version` is answered here, before typer, rich and any command module load: it is
what scripts and bootstrap call to see which fleet is installed, and it should cost little
more than starting Python. Everything else goes to fleet.cli.dispatch, which imports only
the module of the command named.
"""

from __future__ import annotations

import sys

from fleet.errors import EXIT_OK
from fleet.version import version_line


def main() -> None:
    """Run the command line in sys.argv and exit with its code."""
    args = sys.argv[1:]
    if args == ["--version"]:
        print(version_line())
        sys.exit(EXIT_OK)
    from fleet.cli.fast import prefetch_refs

    prefetch_refs(args)  # `fleet apply`: the remotes asked while the rest of fleet loads
    from fleet.cli.dispatch import run  # typer, rich and the command modules

    sys.exit(run(args))


if __name__ == "__main__":  # pragma: no cover
    main()
