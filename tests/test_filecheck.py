"""Runs the FileCheck-style IR tests in tests/filecheck with lit."""

import subprocess
import sys
from pathlib import Path

FILECHECK_DIR = Path(__file__).parent / "filecheck"


def test_lit_filecheck_suite():
    result = subprocess.run([sys.executable, "-c", "import lit.main; lit.main.main()", "-v", str(FILECHECK_DIR)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "Failed" not in result.stdout
