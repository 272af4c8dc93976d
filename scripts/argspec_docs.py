"""Write the variable tables of the docs from the roles' argument specs.

The argument specs (roles/*/meta/argument_specs.yml, entry point main) are the
one source of the roles' variables: their type, default and description. Every
Markdown file that documents a role's variables carries a generated table
between two markers,

    <!-- argspec:ROLE begin -->
    ...
    <!-- argspec:ROLE end -->

and this script rewrites what is between them. `--check` writes nothing and
exits 1 when a table differs from its argument spec (the unit tests run it),
so the docs cannot disagree with the code.

    python scripts/argspec_docs.py          # rewrite the tables
    python scripts/argspec_docs.py --check  # fail when one is out of date
"""

import argparse
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARKER = re.compile(r"(<!-- argspec:(?P<role>[a-z_]+) begin -->\n)(?P<body>.*?)(<!-- argspec:(?P=role) end -->)", re.S)

# Ansible's documentation markup, as Markdown.
_MARKUP = [
    (re.compile(r"L\(([^,()]+),\s*([^()]+)\)"), r"[\1](\2)"),
    (re.compile(r"[COVMPE]\(([^()]*)\)"), r"`\1`"),
    (re.compile(r"I\(([^()]*)\)"), r"*\1*"),
    (re.compile(r"B\(([^()]*)\)"), r"**\1**"),
    (re.compile(r"U\(([^()]*)\)"), r"<\1>"),
]


def markdown(text):
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    return text.replace("|", "\\|").replace("\n", " ").strip()


def default_text(spec):
    if spec.get("required"):
        return "required"
    if "default" not in spec:
        return ""
    value = spec["default"]
    if isinstance(value, str):
        return "`\"\"`" if value == "" else "`%s`" % value.replace("|", "\\|")
    return "`%s`" % json.dumps(value).replace("|", "\\|")


def type_text(spec):
    kind = spec.get("type", "str")
    if kind == "list" and spec.get("elements"):
        kind = "list of %s" % spec["elements"]
    if spec.get("choices"):
        kind += ": " + ", ".join("`%s`" % choice for choice in spec["choices"])
    return kind


def table(role):
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    rows = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, spec in specs["main"]["options"].items():
        description = spec.get("description", "")
        if isinstance(description, list):
            description = " ".join(description)
        rows.append("| `%s` | %s | %s | %s |" % (name, type_text(spec), default_text(spec), markdown(description)))
    return "\n".join(rows) + "\n"


def documents():
    """Every Markdown file of the repository with at least one marker."""
    candidates = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "roles").glob("*/README.md"))
    return [path for path in candidates if MARKER.search(path.read_text())]


def render(text):
    return MARKER.sub(lambda m: m.group(1) + table(m.group("role")) + m.group(4), text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a table is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in documents():
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("out of date (run python scripts/argspec_docs.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    for path in stale:
        print("rewrote %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
