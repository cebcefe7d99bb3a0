"""``python -m napixclient``: the ``napix`` command (see :mod:`napixclient.cli`)."""

import sys

try:
    from napixclient.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command was still loading
    print("napix: interrupted", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
