"""The domain's hand-written evaluation questions (eval.yaml), and validation.yaml in the
same format: hand-written, or a reviewer's verdicts on users' questions
(``domainkit review``), which also record the line that answers and the exchange."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    verdict: Literal["right", "line", "answer_text", "not_in_docs", "off_topic"] | None = Field(
        None,
        description="A reviewer's verdict (domainkit review): the answer was right, this line "
        "answers it, this text does, the documents do not answer it, or it is off topic.",
    )
    line: str | None = Field(
        None, description="The id of the line that answers it (reviewed questions)."
    )
    lines: list[str] = Field(
        default_factory=list,
        description="The ids of all the lines of the answer, in order, when there are several "
        "(a verdict of right on an answer of several lines, or of line naming several): a "
        "repeat is answered with them.",
    )
    exchange: str | None = Field(
        None, description="The conversation log's exchange a reviewed question came from."
    )
    reviewed: str | None = Field(None, description="When it was reviewed (ISO date).")

    @model_validator(mode="after")
    def _answer_matches_answerable(self) -> EvalQuestion:
        if self.answerable and not self.answer:
            raise ValueError("an answerable question needs a reference answer")
        return self


class EvalSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: list[EvalQuestion] = Field(default_factory=list)

    def current(self) -> list[EvalQuestion]:
        """The questions that count: every hand-written one, and of the reviewed ones
        (those with an exchange) the latest verdict per exchange and per question, case and
        spacing aside: a reviewer who marks the same question again changes their verdict."""
        later: set[str] = set()
        kept = []
        for q in reversed(self.questions):
            if q.exchange:
                keys = {f"exchange:{q.exchange}", f"question:{question_key(q.question)}"}
                if keys & later:
                    continue
                later |= keys
            kept.append(q)
        return kept[::-1]


def question_key(question: str) -> str:
    """What makes two questions the same question: their words, case and spacing aside."""
    return " ".join(question.lower().split())


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
