"""The error a records function raises for a request a person must correct: translatable, and naming the field."""

from __future__ import annotations


class FormError(Exception):
    """`message` is a msgid with {params} (the console translates it, then fills them in); `field` is the form
    field to correct, if any."""

    def __init__(self, message: str, field: str | None = None, **params: object) -> None:
        super().__init__(message.format(**params))
        self.message = message
        self.field = field
        self.params = params
