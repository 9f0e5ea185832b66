"""Teachers write the synthetic data: chat backends (``domainkit.backends``) behind a call
cache; named in ``TEACHERS``, or by any chat backend's name."""

from domainkit.synth.teachers import builtin as _builtin  # noqa: F401  (registers hf, openai)
from domainkit.synth.teachers.base import (
    TEACHERS,
    BackendTeacher,
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
    "BackendTeacher",
    "CachedTeacher",
    "CallCache",
    "Conversation",
    "Sampling",
    "Teacher",
    "TeacherError",
    "make_teacher",
]
