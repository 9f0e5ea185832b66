from pathlib import Path

import pytest
import yaml

from domainkit.config import available_recipes, load_domain, load_recipe
from domainkit.config.scaffold import scaffold_domain
from domainkit.errors import ConfigError

from .conftest import write_domain


def test_the_four_verticals_ship_as_recipes():
    assert {"legal", "customer-support", "education", "medical"} <= set(available_recipes())


@pytest.mark.parametrize("name", available_recipes())
def test_every_recipe_parses_and_renders_its_system_prompt(name):
    recipe = load_recipe(name)
    assert recipe.name == name
    prompt = recipe.render_system_prompt()
    assert "{" not in prompt, prompt
    assert recipe.refusal.strip()


def test_legal_and_medical_carry_disclaimers_and_train_more_refusals():
    support = load_recipe("customer-support")

    def refusal_share(recipe):
        mix = recipe.synth.mix
        return (mix.get("near_miss", 0) + mix.get("refusal", 0)) / sum(mix.values())

    for name in ("legal", "medical"):
        recipe = load_recipe(name)
        assert recipe.disclaimer
        assert refusal_share(recipe) > refusal_share(support)
        assert recipe.runtime.client_policies == ["auto"], "clients cannot switch the gate off"


def test_domain_overrides_recipe_fields_and_keeps_the_rest(tmp_path):
    root = write_domain(tmp_path / "d", {"a.md": "# A\n\ntext"}, persona={"tone": "terse"})
    domain = load_domain(root)
    recipe = load_recipe("customer-support")
    assert domain.config.persona.tone == "terse"
    assert domain.config.persona.assistant_name == recipe.persona.assistant_name
    assert domain.config.chunking.chunk_size == 40
    assert domain.config.refusal == recipe.refusal
    assert "Testco" in domain.config.render_system_prompt()


def _error_for(tmp_path: Path, config: dict) -> str:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "domain.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as info:
        load_domain(root)
    return str(info.value)


def test_bad_value_names_file_field_value_and_expectation(tmp_path):
    message = _error_for(
        tmp_path, {"name": "x", "recipe": "legal", "chunking": {"chunk_size": "big"}}
    )
    assert "domain.yaml" in message
    assert "chunking.chunk_size" in message
    assert "'big'" in message
    assert "integer" in message


def test_unknown_field_is_reported_not_ignored(tmp_path):
    message = _error_for(tmp_path, {"name": "x", "recipe": "legal", "retreival": {"top_k": 3}})
    assert "retreival" in message and "unknown field" in message


def test_out_of_range_and_cross_field_errors(tmp_path):
    message = _error_for(
        tmp_path,
        {
            "name": "x",
            "chunking": {"chunk_size": 50, "chunk_overlap": 60},
            "runtime": {"temperature": 9},
        },
    )
    assert "chunk_overlap (60) must be smaller than chunk_size (50)" in message
    assert "runtime.temperature" in message and "less than or equal to 2" in message


def test_unknown_recipe_lists_the_known_ones(tmp_path):
    message = _error_for(tmp_path, {"name": "x", "recipe": "astrology"})
    assert "astrology" in message and "customer-support" in message


def test_invalid_yaml_names_the_line(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "domain.yaml").write_text("name: x\nrecipe: [legal\n")
    with pytest.raises(ConfigError, match=r"domain.yaml \(line \d+, column \d+\): invalid YAML"):
        load_domain(root)


def test_missing_domain_yaml_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError, match="domainkit init"):
        load_domain(tmp_path)


def test_error_in_a_recipe_file_names_the_recipe_file(tmp_path):
    recipe = tmp_path / "my-recipe.yaml"
    recipe.write_text("name: mine\nretrieval:\n  mode: psychic\n")
    message = _error_for(tmp_path, {"name": "x", "recipe": str(recipe)})
    assert "my-recipe.yaml" in message and "retrieval.mode" in message and "psychic" in message


def test_scaffold_creates_a_loadable_domain_and_never_overwrites(tmp_path):
    root = tmp_path / "acme"
    written = scaffold_domain(root, "legal", organization="Acme Law")
    assert {p.name for p in written} == {"domain.yaml", "eval.yaml", "example.md"}
    domain = load_domain(root)
    assert domain.config.recipe == "legal"
    assert domain.config.organization == "Acme Law"
    assert domain.config.disclaimer == load_recipe("legal").disclaimer
    with pytest.raises(ConfigError, match="already exists"):
        scaffold_domain(root, "legal")


def test_scaffold_keeps_existing_documents(tmp_path):
    root = tmp_path / "acme"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "example.md").write_text("my own text")
    scaffold_domain(root, "education")
    assert (root / "docs" / "example.md").read_text() == "my own text"


def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    layers = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    layers += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    (tmp_path / "domain.yaml").write_text("name: bomb\n" + "\n".join(layers) + "\n")
    with pytest.raises(ConfigError, match=r"line 3.*aliases \(\*name\) are not allowed"):
        load_domain(tmp_path)


def test_the_layout_names_every_build_path_once_under_the_build_folder(support_domain):
    import dataclasses
    from pathlib import Path

    config = support_domain / "domain.yaml"
    config.write_text(config.read_text() + "build_dir: out/build\n")
    domain = load_domain(support_domain)
    layout = domain.layout
    names = [
        name
        for name, value in vars(type(layout)).items()
        if isinstance(value, property) and not name.startswith("_")
    ]
    paths = [p for p in (getattr(layout, name) for name in names) if isinstance(p, Path)]
    assert len(set(paths)) == len(paths) >= 12, "no two names share a path"
    assert all(p.is_relative_to(support_domain / "out" / "build") for p in paths)
    assert layout.bundle_files.root == layout.bundle
    assert layout.phase("sft").best.is_relative_to(layout.train)
    assert domain.index_dir == layout.index and dataclasses.is_dataclass(layout)


def test_bases_are_not_recipes_and_a_recipe_sets_only_what_differs():
    from domainkit.config.loading import recipes_dir

    assert "_base" not in available_recipes()
    assert (recipes_dir() / "_base.yaml").is_file()
    legal = yaml.safe_load((recipes_dir() / "legal.yaml").read_text())
    assert legal["base"] == "_base" and "evidence" not in legal
    assert load_recipe("legal").evidence.max_words == 140  # from the base


def test_a_recipe_of_ones_own_builds_on_a_base_beside_it_or_a_shipped_one(tmp_path):
    (tmp_path / "_mine.yaml").write_text("train:\n  lora_r: 8\n")
    (tmp_path / "mine.yaml").write_text("base: _mine\nname: mine\n")
    (tmp_path / "theirs.yaml").write_text("base: _base\nname: theirs\n")
    assert load_recipe(str(tmp_path / "mine.yaml")).train.lora_r == 8
    assert load_recipe(str(tmp_path / "theirs.yaml")).train.method == "lora"
    (tmp_path / "_mine.yaml").write_text("base: mine\n")
    with pytest.raises(ConfigError, match="loop"):
        load_recipe(str(tmp_path / "mine.yaml"))


def test_an_unknown_field_points_to_the_schema(tmp_path):
    message = _error_for(tmp_path, {"name": "x", "retreival": {"top_k": 3}})
    assert "domainkit config --schema" in message


def test_config_names_where_each_setting_comes_from(tmp_path, monkeypatch):
    from domainkit.config.loading import recipes_dir
    from domainkit.config.provenance import explain_domain

    root = write_domain(tmp_path / "d", {"a.md": "# A\n\ntext"}, persona={"tone": "terse"})
    monkeypatch.chdir(tmp_path)
    sources = {s.path: s.source for s in explain_domain(root)}
    values = {s.path: s.value for s in explain_domain(root)}
    base, recipe = recipes_dir() / "_base.yaml", recipes_dir() / "customer-support.yaml"
    assert sources["persona.tone"] == "d/domain.yaml" and values["persona.tone"] == "terse"
    assert sources["persona.assistant_name"] == str(recipe.resolve())
    assert sources["train.method"] == str(base.resolve()) and values["train.method"] == "lora"
    assert sources["synth.mix.self_chat"] == str(recipe.resolve())
    assert sources["train.optimizer"] == "default" and values["train.optimizer"] == "auto"
    config = load_domain(root).config.model_dump(mode="json")
    for path, value in values.items():
        node = config
        for part in path.split("."):
            node = node[part]
        assert node == value, path


def test_config_command_prints_annotated_yaml_json_and_the_schema(tmp_path):
    import json

    from typer.testing import CliRunner

    from domainkit.cli import app
    from domainkit.config.schema import DomainConfig

    root = write_domain(tmp_path / "d", {"a.md": "# A\n\ntext"})
    runner = CliRunner()
    shown = runner.invoke(app, ["config", str(root)])
    assert shown.exit_code == 0, shown.output
    line = next(x for x in shown.stdout.splitlines() if x.strip().startswith("chunk_size:"))
    assert line.split("#")[0].split(":")[1].strip() == "40"
    assert line.split("#")[1].strip().endswith("domain.yaml")
    assert yaml.safe_load(shown.stdout)["chunking"]["chunk_size"] == 40, "reads back as YAML"
    as_json = json.loads(runner.invoke(app, ["config", str(root), "--json"]).stdout)
    assert as_json["retrieval.embedder"] == {
        "value": "hash-test",
        "source": str(root / "domain.yaml"),
    }
    schema = json.loads(runner.invoke(app, ["config", "--schema"]).stdout)
    assert schema == DomainConfig.model_json_schema()
    missing = runner.invoke(app, ["config"])
    assert missing.exit_code == 1 and "--schema" in missing.output


def test_init_points_to_config_for_the_settings(tmp_path):
    root = tmp_path / "acme"
    scaffold_domain(root, "legal")
    text = (root / "domain.yaml").read_text()
    assert f"domainkit config {root}" in text and "domainkit config --schema" in text
    assert "recipes/legal.yaml" not in text
