"""Transitional: the names of libml/names.py and libml/records.py under their old module."""
from libml.names import *  # noqa: F401,F403
from libml.records import *  # noqa: F401,F403
from libml.names import _DERIVED_SUFFIX_RE  # noqa: F401
