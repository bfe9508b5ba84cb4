"""The errors of the channel contract, in one place: what a channel raises and what it catches."""

from __future__ import annotations


class InvalidMessage(ValueError):
    """The channel built a message the core cannot store; nothing was stored."""


class UnknownAgent(LookupError):
    """No agent has that slug."""


class CannotPost(ValueError):
    """The channel cannot post to that conversation first (an id it does not know how to
    address, a platform it cannot start a conversation on); nothing was stored."""


class FileFetchError(Exception):
    """A file the channel could not fetch. ``permanent``: fetching again cannot help (a host
    that is not the platform's, larger than allowed, gone, not allowed); else it may be retried.
    The message is the reason kept on the attachment: plain words, no secrets."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class DeliveryError(Exception):
    """A send that did not go through.

    ``retry_after`` is the platform's own wait (``Retry-After``) when it gave one; ``permanent``
    means retrying cannot help; ``in_doubt`` means the platform may have accepted it anyway.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        permanent: bool = False,
        in_doubt: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent
        self.in_doubt = in_doubt
