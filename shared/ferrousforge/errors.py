"""Errors that carry their HTTP status, so every layer raises and one place answers."""


class ForgeError(Exception):
    """Base error; ``status`` is the HTTP code the API answers with."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ForgeError):
    status = 400


class ModelNotFound(ForgeError):
    status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")
        self.name = name


class NotSupported(BadRequest):
    """The model exists but lacks the capability asked for."""


class PayloadTooLarge(ForgeError):
    status = 413


class Unavailable(ForgeError):
    status = 503
