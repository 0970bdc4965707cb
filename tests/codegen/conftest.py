"""Makes tests/codegen/helpers.py importable as `codegen_helpers` (pytest runs with
--import-mode=importlib, where test folders are not packages)."""

import importlib.util
import sys
from pathlib import Path

_NAME = "codegen_helpers"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name("helpers.py"))
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)
