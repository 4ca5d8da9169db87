"""The streamwatch monitoring mixin: Grafana dashboards, Prometheus recording rules and alerts.

Plain Python building plain JSON and YAML documents: every metric name, label name and closed label
value comes from :mod:`streamwatch.metricspec`, and the PromQL helpers refuse a label a family does
not carry, so a dashboard cannot query a series the code does not export. ``dashboards/generate.py``
writes the documents to the repository; this package only builds them.

Why not Grafana's ``grafana-foundation-sdk``: its PyPI releases are alpha builds versioned by an
epoch timestamp per Grafana version, so a plain install resolves to the Grafana 10.1 types, the
newest types are for 11.6, and it would add 2 MB of generated builders to produce the same JSON that
six small functions here produce; the generated dashboards are verified instead by evaluating every
query against a real Prometheus scraping a live streamwatch.
"""
