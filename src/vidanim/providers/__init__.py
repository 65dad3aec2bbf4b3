"""Provider clients: fal.ai's queue API and Runway's image-to-video API.

Both speak HTTP through httpx and share one small interface (`base.Provider`), so
the worker does not know which provider it drives, and the same code talks to the
real services and to the loopback simulator.
"""

from vidanim.providers.base import (
    InputRefused,
    OperatorFault,
    PermanentProviderError,
    Provider,
    ProviderError,
    Submission,
    TaskState,
    TaskStatus,
    TransientProviderError,
)

__all__ = [
    "InputRefused",
    "OperatorFault",
    "PermanentProviderError",
    "Provider",
    "ProviderError",
    "Submission",
    "TaskState",
    "TaskStatus",
    "TransientProviderError",
]
