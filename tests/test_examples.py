"""Every example job runs through `wasmtime-driver run` with its documented output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "build" / "wasmtime-driver"

# job file name → (stdout, exit code); each job's header comment says the same.
EXPECTED = {
    "sum.nomad": (b"802366\n", 0),
    "reverse.nomad": (b"!dlrow ,olleH", 0),
    "json_upper.nomad": (b'{"output":"HELLO FROM NOMAD"}', 0),
    "typed.nomad": (b"0.30000000000000004\n", 0),
    "hello_wasi.nomad": (b"hello, nomad\nargv: hello_wasi.wasm /etc/hostname\n", 3),
}


def test_examples_all_listed() -> None:
    jobs = {path.name for path in (REPO / "example" / "job").glob("*.nomad")}
    assert jobs == set(EXPECTED)


@pytest.mark.parametrize("job", sorted(EXPECTED))
def test_example_job_output(job: str) -> None:
    expected_stdout, expected_code = EXPECTED[job]
    completed = subprocess.run(
        [str(PLUGIN), "run", "-q", f"example/job/{job}"],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert completed.stdout == expected_stdout, completed.stderr.decode()
    assert completed.returncode == expected_code, completed.stderr.decode()


def test_hello_wasi_denied_path_on_stderr() -> None:
    completed = subprocess.run(
        [str(PLUGIN), "run", "-q", "example/job/hello_wasi.nomad"],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )
    stderr = completed.stderr.decode()
    assert "hello_wasi: this line goes to stderr" in stderr
    assert "cannot open /etc/hostname" in stderr
