"""Conventions every role of the collection keeps, checked once for all roles.

- meta/argument_specs.yml in lockstep with defaults/main.yml: the same keys,
  the same defaults, matching types (entry points main and, where a role has
  one, preflight, which site.yml validates before anything changes);
- every template starts with the managed header (scripts: right after their "#!" line,
  which must stay the first line for the kernel to run them).
"""

import pathlib

import pytest
import yaml

ROLES = pathlib.Path(__file__).resolve().parents[2] / "roles"
TYPES = {str: "str", int: "int", bool: "bool", list: "list", dict: "dict"}
ENTRY_POINTS = [
    (role.name, entry)
    for role in sorted(ROLES.iterdir())
    for entry in ("main", "preflight")
    if entry in yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
]
TEMPLATES = sorted(ROLES.glob("*/templates/**/*.j2"))


@pytest.mark.parametrize(("role", "entry"), ENTRY_POINTS, ids=[f"{r}:{e}" for r, e in ENTRY_POINTS])
def test_argument_spec_matches_defaults(role, entry):
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}
    options = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"][entry]["options"]
    required = {name for name, spec in options.items() if spec.get("required")}
    assert set(options) - required == set(defaults), "keys differ between defaults/main.yml and the argument spec"
    assert not required & set(defaults), "a required option must not have a default"
    for name, value in defaults.items():
        assert options[name].get("default") == value, name
        assert options[name]["type"] == TYPES[type(value)], name


def test_every_role_has_a_main_entry_point():
    assert {role for role, entry in ENTRY_POINTS if entry == "main"} == {role.name for role in ROLES.iterdir()}


@pytest.mark.parametrize("template", TEMPLATES, ids=[str(t.relative_to(ROLES)) for t in TEMPLATES])
def test_template_starts_with_managed_header(template):
    lines = template.read_text().split("\n", 2)
    first = lines[1] if lines[0].startswith("#!") else lines[0]
    assert "ansible_managed | comment" in first
