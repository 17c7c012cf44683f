"""Coverage-guided fuzzing of the frame decoders with atheris, bounded in time.

Runs tests/fuzz/protocol_target.py in its own process (libFuzzer takes over
the process) for a fixed number of inputs; any exception other than
ProtocolError makes atheris exit non-zero with the input that caused it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.functional import helpers

pytest.importorskip("atheris", reason="atheris has wheels for x86_64 Linux only")

RUNS = 300_000  # about a second or two here; the time cap below is the real bound


def test_decoders_survive_coverage_guided_fuzzing(tmp_path):
    command = [sys.executable, "-m", "tests.fuzz.protocol_target"]
    command += [f"-runs={RUNS}", "-seed=20261201", "-max_total_time=60"]
    command += [f"-artifact_prefix={tmp_path}/"]  # a crashing input is kept there, not in the tree
    done = subprocess.run(command, cwd=helpers.REPO, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Done " in output, output[-3000:]
