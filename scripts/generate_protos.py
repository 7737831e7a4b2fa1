"""Generate the Python protocol code in src/wasmtime_driver/protocol from proto/.

Run with the project's virtual environment:

    .venv/bin/python scripts/generate_protos.py           # rewrite the code
    .venv/bin/python scripts/generate_protos.py --check   # compare only

protoc (from grpcio-tools) writes `*_pb2.py`, `*_pb2_grpc.py` and, through
mypy-protobuf's plugins, matching `.pyi` stubs. The `.proto` files keep
Nomad's and go-plugin's directory layout, so protoc emits absolute imports
such as `from hashicorp.nomad.plugins.shared.hclspec import hcl_spec_pb2`,
which would need top-level `hashicorp` and `plugin` packages. Instead, this
script flattens every generated module into the single package
`wasmtime_driver.protocol` and rewrites those imports to `from . import
hcl_spec_pb2`. The descriptors keep their original file names, so the wire
format and the protobuf descriptor pool are unaffected. The rewrite is two
regular expressions on lines protoc itself writes, so it is done here rather
than with an extra dependency such as protoletariat.

`--check` generates into a temporary directory and exits with status 1,
listing every file that differs from, is missing from, or is extra in the
committed package.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUTPUT_DIR = ROOT / "src" / "wasmtime_driver" / "protocol"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")

# Top-level proto directories whose generated imports are rewritten.
LOCAL_ROOTS = "hashicorp|plugin"
IMPORT_PATTERN = re.compile(
    rf"^from (?:{LOCAL_ROOTS})(?:\.\w+)* import (\w+_pb2) as ",
    re.MULTILINE,
)
# protoc's generated version-check message names the source path of the file.
PATH_PATTERN = re.compile(rf"code in (?:{LOCAL_ROOTS})/[\w/]*?(\w+_pb2_grpc\.py)")
SERVICE_PATTERN = re.compile(r"^service\s", re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare the committed code with a fresh generation; write nothing",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="protogen") as tmp:
        generated = generate(Path(tmp))
        if args.check:
            return check(generated)
        write(generated)
    return 0


def generate(work_dir: Path) -> dict[str, str]:
    """Run protoc into `work_dir` and return the flattened files by name."""
    sources = sorted(
        p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto")
    )
    if not sources:
        raise SystemExit(f"no .proto files found under {PROTO_DIR}")
    services = [
        s for s in sources if SERVICE_PATTERN.search((PROTO_DIR / s).read_text())
    ]
    run_protoc(work_dir, ["--python_out", "--mypy_out"], sources)
    run_protoc(work_dir, ["--grpc_python_out", "--mypy_grpc_out"], services)
    return flatten(work_dir)


def run_protoc(work_dir: Path, outputs: list[str], sources: list[str]) -> None:
    """Run protoc with the given output options and grpc_tools' well-known types."""
    bin_dir = Path(sys.executable).parent
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_DIR}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        # mypy-protobuf's "quiet" option stops it listing every file on stderr.
        "--mypy_opt=quiet",
        "--mypy_grpc_opt=quiet",
        *(f"{option}={work_dir}" for option in outputs),
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {', '.join(sources)}")


def flatten(work_dir: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in sorted(work_dir.rglob("*")):
        if not path.is_file():
            continue
        if path.name in files:
            raise SystemExit(
                f"two generated modules are named {path.name}: "
                "rename one of the .proto files"
            )
        text = IMPORT_PATTERN.sub(r"from . import \1 as ", path.read_text())
        files[path.name] = PATH_PATTERN.sub(r"code in \1", text)
    return files


def check(generated: dict[str, str]) -> int:
    committed = {
        p.name for p in OUTPUT_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    }
    stale = sorted(
        name
        for name in committed | generated.keys()
        if name not in committed
        or name not in generated
        or (OUTPUT_DIR / name).read_text() != generated[name]
    )
    for name in stale:
        print(f"out of date: {OUTPUT_DIR.relative_to(ROOT) / name}", file=sys.stderr)
    if stale:
        print("run: .venv/bin/python scripts/generate_protos.py", file=sys.stderr)
        return 1
    return 0


def write(generated: dict[str, str]) -> None:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    for path in OUTPUT_DIR.iterdir():
        if path.name.endswith(GENERATED_SUFFIXES) and path.name not in generated:
            path.unlink()
    for name, text in generated.items():
        (OUTPUT_DIR / name).write_text(text)


if __name__ == "__main__":
    sys.exit(main())
