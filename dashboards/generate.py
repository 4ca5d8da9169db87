"""Generate the monitoring mixin (Grafana dashboards, Prometheus rules and alerts, the Kubernetes
PrometheusRule) and the README's metric table, from ``streamwatch/metricspec.py`` and
``streamwatch/mixin/config.yaml``. The documents are built by :mod:`streamwatch.mixin`, which
ships in the package (``streamwatch dashboards export DIR`` writes them from an installed copy).

    python dashboards/generate.py           # rewrite the committed output
    python dashboards/generate.py --check   # exit 1 if the committed output is stale (CI)
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from streamwatch.mixin.config import Config, MixinConfigError
from streamwatch.mixin.output import outputs

REPO = Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="diff instead of writing; exit 1 if stale"
    )
    parser.add_argument(
        "--config", type=Path, default=REPO / "streamwatch" / "mixin" / "config.yaml"
    )
    args = parser.parse_args(argv)
    try:
        cfg = Config.from_yaml(args.config)
    except MixinConfigError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 2
    stale = 0
    for path, text in outputs(cfg, REPO):
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            continue
        rel = path.relative_to(REPO)
        if args.check:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"{rel} (committed)",
                    f"{rel} (generated)",
                )
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {rel}")
    if stale:
        print(f"{stale} generated file(s) are stale: run python dashboards/generate.py")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
