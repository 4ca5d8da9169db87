"""Which side of the gateway a route watches (the ``side`` metric label)."""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    """Where a route's streamwatch sits, so two sidecars of one gateway can be told apart.

    ``client``: between the gateway's clients and the gateway (what users see). ``provider``:
    between the gateway and the provider APIs (what the providers deliver, before the gateway
    re-frames it). Client-side TTFT minus provider-side TTFT of the same model is the time the
    gateway added. A route's side is fixed by configuration, so the label adds no series.
    """

    CLIENT = "client"
    PROVIDER = "provider"
