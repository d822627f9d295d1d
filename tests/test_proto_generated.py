"""The committed generated code must match proto/formation.proto (run `make proto`)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_generated_code_is_up_to_date():
    with tempfile.TemporaryDirectory() as out:
        os.makedirs(os.path.join(out, "proto"))
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={out}",
                        f"--grpc_python_out={out}", f"--pyi_out={out}", "proto/formation.proto"],
                       cwd=ROOT, check=True)
        for name in ("formation_pb2.py", "formation_pb2_grpc.py", "formation_pb2.pyi"):
            with open(os.path.join(out, "proto", name)) as f:
                fresh = f.read()
            with open(os.path.join(ROOT, "proto", name)) as f:
                committed = f.read()
            assert fresh == committed, f"proto/{name} is stale: run `make proto`"
