"""The hook as a script: ``python3 -I -S hooks/network/__main__.py --phase ...``
(what hako writes into config.json), or ``python3 -m hooks.network``.

Run as a file, the directory holding ``hooks/`` is not on sys.path (``-I``
puts nothing there): it is added first, so that the package imports itself.
"""

import os
import sys

if not __package__:  # a file, not -m: make `hooks` importable from where it lives
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))

from hooks.network.hook import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
