"""Errors that carry their HTTP status, so every layer raises and one place answers."""


class ForgeError(Exception):
    """Base error; ``status`` is the HTTP code the API answers with, ``headers`` go with it."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = {}


class BadRequest(ForgeError):
    status = 400


class ModelNotFound(ForgeError):
    status = 404

    def __init__(self, name: str, hint: str = "") -> None:
        super().__init__(f"model '{name}' not found{hint}")
        self.name = name

    @classmethod
    def to_run(cls, name: str) -> "ModelNotFound":
        """Asked to run a model the store lacks: say what to do, as Ollama does."""
        return cls(name, ", try pulling it first")


class NotSupported(BadRequest):
    """The model exists but lacks the capability asked for."""


class PayloadTooLarge(ForgeError):
    status = 413


class Unavailable(ForgeError):
    """Busy or out of room: the client may retry after ``retry_after`` seconds (None: retrying won't help)."""

    status = 503

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)


class Aborted(ForgeError):
    """The caller called the request off (a page's AbortSignal): nothing to retry elsewhere."""

    status = 499

    def __init__(self, message: str = "the request was aborted") -> None:
        super().__init__(message)
