"""The domain's hand-written evaluation questions (eval.yaml)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from domainkit.config.loading import read_yaml_mapping
from domainkit.errors import ConfigError


class EvalQuestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., min_length=3, description="Asked as a user would ask it.")
    answer: str | None = Field(None, description="Short reference answer (answerable only).")
    answerable: bool = Field(True, description="False when the documents do not answer it.")
    source: str | None = Field(None, description="Document the answer comes from (docs/...).")
    spans: list[str] = Field(
        default_factory=list,
        description="Accepted short answers: an answer that contains one of them (lower case, "
        "no punctuation or articles) is correct. Without spans, the reference's key facts decide.",
    )

    @model_validator(mode="after")
    def _answer_matches_answerable(self) -> EvalQuestion:
        if self.answerable and not self.answer:
            raise ValueError("an answerable question needs a reference answer")
        return self


class EvalSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: list[EvalQuestion] = Field(default_factory=list)


def load_eval_set(path: Path) -> EvalSet:
    """Read eval.yaml; a missing file is an empty set, an invalid one a ``ConfigError``."""
    if not path.is_file():
        return EvalSet()
    try:
        return EvalSet.model_validate(read_yaml_mapping(path))
    except ValidationError as e:
        problems = [
            f"{path}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        ]
        raise ConfigError("invalid eval set:\n  " + "\n  ".join(problems[:10])) from None
