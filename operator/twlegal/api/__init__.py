"""The LegalModelRelease API: pydantic models, the one source of truth, and the CRD made from them."""

from .release import API_VERSION, GROUP, KIND, PLURAL, VERSION, LegalModelRelease
from .spec import LegalModelReleaseSpec
from .status import PHASES, LegalModelReleaseStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PHASES",
    "PLURAL",
    "VERSION",
    "LegalModelRelease",
    "LegalModelReleaseSpec",
    "LegalModelReleaseStatus",
]
