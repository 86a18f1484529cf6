"""The errors of the model zoo.

Every one of them is a user-facing problem (a bad card, no network, a licence not accepted),
so each carries a message that says what went wrong and what to do; callers print it without a
traceback. They derive from ValueError so generic "bad input" handlers catch them too.
"""

from __future__ import annotations


class ZooError(ValueError):
    """Base class: a model could not be listed, found, downloaded or verified."""


class CardError(ZooError):
    """A model card file is not valid JSON or breaks the schema in models/README.md."""


class UnknownModelError(ZooError):
    """A name is neither an existing file nor the id of a card."""


class WeightsUnavailableError(ZooError):
    """A card's weights cannot be fetched automatically (manual, unpublished, missing bundle)."""


class LicenseNotAcceptedError(ZooError):
    """A download needs the licence accepted first, and nobody accepted it."""


class DownloadError(ZooError):
    """A download failed (network, server, cancelled); a partial file is kept for resuming."""


class OfflineError(DownloadError):
    """The server could not be reached at all."""


class DownloadCancelled(DownloadError):
    """The user cancelled; the partial file is kept so a later download resumes."""


class ChecksumMismatchError(DownloadError):
    """The file's size or sha256 differs from what is expected; the file was discarded."""
