"""What a submission is estimated to cost: a price per second of video, per provider and model.

The worker reserves this estimate in the day's ledger before it calls a provider
(`reserve_video_spend`), so the global daily cap holds across every worker. The
default prices and their sources are in docs/providers.md; operators set their own
with VIDANIM_PRICES_USD_PER_SECOND (JSON: {"provider:model": usd_per_second}).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

DEFAULT_PRICES_USD_PER_SECOND: dict[str, float] = {
    # fal.ai, Kling 2.1 standard: "$0.28 for 5 s, $0.056 for every additional second"
    "fal:fal-ai/kling-video/v2.1/standard/image-to-video": 0.056,
    # Runway gen4_turbo: 5 credits per second, a credit is $0.01
    "runway:gen4_turbo": 0.05,
}
# A model without a price is estimated high rather than free.
UNKNOWN_MODEL_USD_PER_SECOND = 0.20
DEFAULT_DURATION_SECONDS = 5
CENT_FRACTION = Decimal("0.0001")


def duration_seconds(options: Mapping[str, Any]) -> int:
    """The video's length the job asks for (providers take "5" or 5), else the default."""
    value = options.get("duration", DEFAULT_DURATION_SECONDS)
    try:
        seconds = int(float(value))
    except (TypeError, ValueError):
        return DEFAULT_DURATION_SECONDS
    return min(max(seconds, 1), 60)


def estimate_cost(
    provider: str,
    model: str,
    options: Mapping[str, Any],
    prices: Mapping[str, float] = DEFAULT_PRICES_USD_PER_SECOND,
    unknown_per_second: float = UNKNOWN_MODEL_USD_PER_SECOND,
) -> Decimal:
    """USD, to a hundredth of a cent."""
    per_second = Decimal(str(prices.get(f"{provider}:{model}", unknown_per_second)))
    return (per_second * duration_seconds(options)).quantize(CENT_FRACTION)
