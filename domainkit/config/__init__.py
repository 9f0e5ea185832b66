"""Configuration: the typed schema, recipes and domain folders."""

from domainkit.config.loading import (
    Domain,
    available_recipes,
    load_domain,
    load_recipe,
    recipes_dir,
)
from domainkit.config.schema import DomainConfig

__all__ = [
    "Domain",
    "DomainConfig",
    "available_recipes",
    "load_domain",
    "load_recipe",
    "recipes_dir",
]
