"""Regenerate the committed monitoring mixin (dashboards/, the PrometheusRule) from a checkout.

The generator lives in the package (streamwatch/mixin.py, configuration streamwatch/mixin.yaml) so
that an installed streamwatch can export it too (``streamwatch dashboards export DIR``).

    python dashboards/generate.py           # rewrite the committed output
    python dashboards/generate.py --check   # exit 1 if the committed output is stale (CI)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from streamwatch.mixin import regenerate  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(regenerate(REPO))
