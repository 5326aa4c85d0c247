"""``python -m pyro_svae``: the command line (see :mod:`pyro_svae.cli`)."""

from pyro_svae.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
