"""Optional compiled build: ``STREAMWATCH_COMPILE=1`` compiles the sans-IO core with mypyc.

Everything else (metadata, dependencies, packages) is in ``pyproject.toml``. Without the variable
the package is pure Python. With it, every module of ``streamwatch/core`` but those listed in
``PURE`` becomes a C extension beside its ``.py`` (which stays, and is what runs wherever the
extension is absent): a chunk then costs fewer instructions than a bare aiohttp pass-through
(``benchmarks/README.md``). Needs a C compiler, the Python headers, and mypy in the build
environment:

    pip install 'mypy==2.4.1' 'setuptools>=77' orjson  # mypyc type-checks what the core imports
    STREAMWATCH_COMPILE=1 pip install --no-build-isolation .
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

#: Core modules left in Python: package markers, and ``formats.py``, whose generic ``Format``
#: class mypyc cannot compile (it only wires decoders to interpreters, once per stream).
PURE = {"__init__.py", "formats.py"}


def compiled_modules() -> list[str]:
    core = Path("streamwatch") / "core"
    return sorted(str(p) for p in core.rglob("*.py") if p.name not in PURE)


ext_modules = []
if os.environ.get("STREAMWATCH_COMPILE") == "1":
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        raise SystemExit(
            "STREAMWATCH_COMPILE=1 needs mypy (mypyc) in the build environment and "
            "pip install --no-build-isolation: see setup.py's docstring"
        ) from exc
    ext_modules = mypycify(compiled_modules(), opt_level="3")

setup(ext_modules=ext_modules)
