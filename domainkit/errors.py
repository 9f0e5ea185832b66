"""Errors a user can act on. The CLI prints their message without a traceback."""


class DomainkitError(Exception):
    """Base class for errors caused by input or set-up, not by a bug."""


class ConfigError(DomainkitError):
    """A domain.yaml, recipe or eval file is missing or invalid."""


class IngestError(DomainkitError):
    """The documents cannot be ingested at all (a single bad file is skipped, not raised)."""


class IndexStoreError(DomainkitError):
    """The index is missing, stale or was built with incompatible settings."""


class UnknownNameError(DomainkitError):
    """A registry was asked for a name nobody registered."""
