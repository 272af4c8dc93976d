"""Conventions every role of the collection keeps, checked once for all roles.

- meta/argument_specs.yml in lockstep with defaults/main.yml: the same keys,
  the same defaults, matching types (entry points main and, where a role has
  one, preflight, which site.yml validates before anything changes);
- every template starts with the managed header (scripts: right after their "#!" line,
  which must stay the first line for the kernel to run them);
- an internal role (proxy_common, included by other roles with tasks_from) has no
  defaults: every task file is an entry point with an argument spec, and every input
  a task file reads is an option of its entry point.
"""

import pathlib
import re

import pytest
import yaml

ROLES = pathlib.Path(__file__).resolve().parents[2] / "roles"
TYPES = {str: "str", int: "int", bool: "bool", list: "list", dict: "dict"}
INTERNAL = ["proxy_common"]
ENTRY_POINTS = [
    (role.name, entry)
    for role in sorted(ROLES.iterdir())
    if role.name not in INTERNAL
    for entry in ("main", "preflight")
    if entry in yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
]
INTERNAL_ENTRY_POINTS = [(role, path.stem) for role in INTERNAL for path in sorted((ROLES / role / "tasks").glob("*.yml"))]
# Every template renders a file the role owns, which starts with the ansible_managed comment,
# except the one-line fragments (*_line.j2) a role puts, marked, into a file of the operator's
# (MX15, docs/alongside.md): a header there would be a second line in the operator's file.
TEMPLATES = sorted(t for t in ROLES.glob("*/templates/**/*.j2") if not t.name.endswith("_line.j2"))


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
    assert {role for role, entry in ENTRY_POINTS if entry == "main"} | set(INTERNAL) == {role.name for role in ROLES.iterdir()}


@pytest.mark.parametrize("role", INTERNAL)
def test_internal_role_has_only_explicit_inputs(role):
    assert not (ROLES / role / "defaults").exists(), "an internal role takes every input from its caller"
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    assert set(specs) == {entry for _role, entry in INTERNAL_ENTRY_POINTS}, "one entry point per task file"


@pytest.mark.parametrize(("role", "entry"), INTERNAL_ENTRY_POINTS, ids=[f"{r}:{e}" for r, e in INTERNAL_ENTRY_POINTS])
def test_internal_entry_point_declares_what_it_reads(role, entry):
    options = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"][entry]["options"]
    text = (ROLES / role / "tasks" / f"{entry}.yml").read_text()
    if "proxy_common_documents" in options:  # the derived file names (vars/main.yml) read it too
        text += (ROLES / role / "vars" / "main.yml").read_text()
    inputs = set(re.findall(rf"(?<![_\w]){role}_[a-z_]+", text))
    outputs = set(re.findall(rf"^\s+({role}_[a-z_]+):", text, re.M))  # facts the entry point sets
    assert inputs - outputs <= set(options), "read but not an option of the entry point"
    for name, spec in options.items():
        assert spec.get("description") and spec.get("type"), name


@pytest.mark.parametrize("template", TEMPLATES, ids=[str(t.relative_to(ROLES)) for t in TEMPLATES])
def test_template_starts_with_managed_header(template):
    lines = template.read_text().split("\n", 2)
    first = lines[1] if lines[0].startswith("#!") else lines[0]
    assert "ansible_managed | comment" in first
