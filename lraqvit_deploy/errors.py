"""Error types: a `DeployError` is the user's to fix and the CLI prints it without a traceback."""


class DeployError(Exception):
    """Bad input or a missing prerequisite; the message says how to fix it."""


class WeightsNotFoundError(DeployError):
    """No weights could be found for the requested model."""


class ToleranceError(DeployError):
    """A lowered program disagrees with the reference beyond the allowed tolerance."""


class InternalError(RuntimeError):
    """A bug in lraqvit-deploy itself (deliberately not a DeployError)."""
