"""A loopback HTTP simulator of the fal.ai queue API and Runway's API.

Used by the tests and by `make demo` when no provider key is configured; never
used when real keys are set.
"""

from vidanim.simulator.server import Simulator

__all__ = ["Simulator"]
