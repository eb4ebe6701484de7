"""Why a run cannot go on: the coordinator's two ways of ending a run with a reason."""

from __future__ import annotations


class FederationError(RuntimeError):
    """The run cannot produce a trustworthy model; the message says why."""


class FederationStopped(RuntimeError):
    """The federation can no longer run rounds; the message says why."""
