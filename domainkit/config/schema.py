"""The typed schema shared by recipes and domain.yaml.

A recipe is a complete ``DomainConfig`` for one vertical; a domain.yaml names a recipe and
overrides any field. Every field has a default, a description and validation, so a typo or
a bad value fails early with the file, the field and what was expected. The sections live
in ``data_settings`` (ingest to synth) and ``model_settings`` (train, runtime, eval); they
are importable from here.
"""

from __future__ import annotations

from pydantic import Field

from domainkit.config.base import Section
from domainkit.config.data_settings import (
    ChunkingConfig,
    EvidenceConfig,
    IngestConfig,
    RetrievalConfig,
    SynthConfig,
    SynthFilterConfig,
    TeacherConfig,
)
from domainkit.config.model_settings import (
    EvalConfig,
    Policy,
    PreferenceConfig,
    PretrainConfig,
    RuntimeConfig,
    TrainConfig,
)

__all__ = [
    "ChunkingConfig",
    "DomainConfig",
    "EvalConfig",
    "EvidenceConfig",
    "IngestConfig",
    "PersonaConfig",
    "Policy",
    "PreferenceConfig",
    "PretrainConfig",
    "RetrievalConfig",
    "RuntimeConfig",
    "SynthConfig",
    "SynthFilterConfig",
    "TeacherConfig",
    "TrainConfig",
]


class PersonaConfig(Section):
    """Who the assistant is and who it talks to."""

    assistant_name: str = Field("Assistant", description="Name the assistant uses for itself.")
    role: str = Field(
        "a helpful assistant for the organization's documents",
        description="One phrase describing the assistant's job.",
    )
    tone: str = Field("clear, accurate and concise", description="How answers should sound.")
    user_persona: str = Field(
        "a person with a practical question about the documents",
        description="What the simulated user is like when synthetic dialogs are generated.",
    )


class DomainConfig(Section):
    """A complete domain configuration: recipe defaults merged with domain.yaml overrides."""

    name: str = Field(..., min_length=1, description="Short name of the domain or recipe.")
    organization: str | None = Field(None, description="Organization the documents belong to.")
    description: str = Field("", description="One sentence on what the assistant is for.")
    recipe: str | None = Field(None, description="Recipe this domain starts from.")
    persona: PersonaConfig = Field(default_factory=PersonaConfig)
    system_prompt: str = Field(
        "You are {assistant_name}, {role}. Be {tone}.",
        description="System prompt; {assistant_name}, {role}, {tone}, {organization} are filled.",
    )
    refusal: str = Field(
        "I'm sorry, the documents I have do not cover that.",
        description="What the assistant says when the documents do not answer a question.",
    )
    disclaimer: str | None = Field(None, description="Text appended to answers, if any.")
    docs_dir: str = Field("docs", description="Folder of documents, relative to the domain.")
    build_dir: str = Field(".domainkit", description="Build folder, relative to the domain.")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def render_system_prompt(self) -> str:
        """The system prompt with the persona's fields filled in."""
        organization = {"organization": self.organization or self.name}
        persona = {
            key: value.format_map(_KeepMissing(organization))
            for key, value in self.persona.model_dump().items()
        }
        return self.system_prompt.format_map(_KeepMissing(persona | organization)).strip()


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
