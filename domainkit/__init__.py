"""domainkit: turn a folder of domain documents into a deployable vertical assistant."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
