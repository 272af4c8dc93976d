"""The variable tables of the docs are generated from the argument specs and may not drift.

scripts/argspec_docs.py rewrites every table between `<!-- argspec:ROLE begin/end -->`
markers; here it runs in check mode, and every role's variables must be documented
by at least one generated table (docs/ROLE.md).
"""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("argspec_docs", ROOT / "scripts" / "argspec_docs.py")
argspec_docs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(argspec_docs)

DOCUMENTS = argspec_docs.documents()
ROLES = sorted(role.name for role in (ROOT / "roles").iterdir() if (role / "defaults" / "main.yml").is_file())


@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(p.relative_to(ROOT)) for p in DOCUMENTS])
def test_generated_tables_match_the_argument_specs(path):
    text = path.read_text()
    assert argspec_docs.render(text) == text, f"{path.relative_to(ROOT)}: run python scripts/argspec_docs.py"


@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_a_generated_variable_table(role):
    documented = {m.group("role") for path in DOCUMENTS for m in argspec_docs.MARKER.finditer(path.read_text())}
    assert role in documented, f"no <!-- argspec:{role} begin --> table in README.md, docs/ or roles/*/README.md"


@pytest.mark.parametrize(
    "text,markdown",
    [
        ("C(foo) and O(bar)", "`foo` and `bar`"),
        ("see L(the docs, https://example.com/x)", "see [the docs](https://example.com/x)"),
        ("a | b", "a \\| b"),
        ("I(one) B(two) U(https://x.test)", "*one* **two** <https://x.test>"),
    ],
)
def test_markup_becomes_markdown(text, markdown):
    assert argspec_docs.markdown(text) == markdown
