"""A plugin that only prints a handshake line, for the client launcher tests.

Run as `python tests/fake_handshake_plugin.py MODE`:
- `line TEXT`: print TEXT as the first stdout line, then sleep until killed;
- `exit`: write an error to stderr and exit 3 without a handshake;
- `silent`: print nothing and sleep until killed.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "silent"
    if mode == "line":
        sys.stdout.write(argv[1] + "\n")
        sys.stdout.flush()
    elif mode == "exit":
        sys.stderr.write("fake plugin: refusing to start\n")
        return 3
    time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
