"""``python -m napixclient``: the ``napix`` command (see :mod:`napixclient.cli`)."""

import sys

from napixclient.cli import main

if __name__ == "__main__":
    sys.exit(main())
