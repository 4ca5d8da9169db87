"""Tools on-call engineers run beside the proxy: ``analyze`` (offline verdicts), ``probe``, ``top``."""
