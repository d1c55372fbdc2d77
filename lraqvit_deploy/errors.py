"""Error types: a `DeployError` is the user's to fix and the CLI prints it without a traceback."""


class DeployError(Exception):
    """Bad input or a missing prerequisite; the message says how to fix it."""


class WeightsNotFoundError(DeployError):
    """No weights could be found for the requested model."""


class ToleranceError(DeployError):
    """A lowered program disagrees with the reference beyond the allowed tolerance."""


class InternalError(RuntimeError):
    """A bug in lraqvit-deploy itself (deliberately not a DeployError)."""


class BackendNotInstalled(DeployError):
    """A target whose runtime does not import here (Polygraphy's MissingTool, as an error object).

    `target` names the backend, `requires` what to install, `cause` the import error seen.
    """

    def __init__(self, target: str, requires: str, cause: str = ""):
        self.target, self.requires, self.cause = target, requires, cause
        why = f" ({cause})" if cause else ""
        super().__init__(f"backend not installed: {target!r} needs {requires}{why}.")
