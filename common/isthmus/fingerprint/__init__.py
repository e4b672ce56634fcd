"""Fingerprints of a step: its code, its dependency versions, and the environment it ran in."""

from isthmus.fingerprint.code import CodeFingerprint, code_fingerprint
from isthmus.fingerprint.deps import DependencyFingerprint, dependency_fingerprint
from isthmus.fingerprint.environment import EnvironmentSnapshot, environment_snapshot
from isthmus.fingerprint.values import register_state

__all__ = [
    "CodeFingerprint",
    "DependencyFingerprint",
    "EnvironmentSnapshot",
    "code_fingerprint",
    "dependency_fingerprint",
    "environment_snapshot",
    "register_state",
]
