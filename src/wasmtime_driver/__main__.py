"""Allow `python -m wasmtime_driver`, the same as the `wasmtime-driver` executable."""

import sys

from .cli import main

sys.exit(main())
