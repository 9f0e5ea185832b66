"""Teachers write the synthetic data; backends register by name in ``TEACHERS``."""

from domainkit.synth.teachers import endpoint as _endpoint  # noqa: F401  (registers "openai")
from domainkit.synth.teachers import hf as _hf  # noqa: F401  (registers "hf")
from domainkit.synth.teachers.base import (
    TEACHERS,
    CachedTeacher,
    CallCache,
    Conversation,
    Sampling,
    Teacher,
    TeacherError,
    make_teacher,
)

__all__ = [
    "TEACHERS",
    "CachedTeacher",
    "CallCache",
    "Conversation",
    "Sampling",
    "Teacher",
    "TeacherError",
    "make_teacher",
]
