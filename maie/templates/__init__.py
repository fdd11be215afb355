"""Summary templates: bundles of a prompt, a JSON Schema and an example summary.

A bundle is a directory `<templates dir>/<id>/` holding:

    prompt.jinja   the summary prompt; it receives exactly `transcript` and `schema_json`
    schema.json    a draft 2020-12 JSON Schema of the summary, a top-level object; the optional
                   top-level keyword `x-language` ("en", "vi") names the language of the summary
    example.json   a realistic summary that validates against the schema
    README.md      optional notes for people

The built-in bundles ship inside the package, in `maie/builtin_templates/` (package data, so a
plain `pip install` has them). A user directory (`TEMPLATES_DIR`) is searched first, so its
bundles override built-ins with the same id and add new ones. Directories whose names start with
`_` or `.` are never bundles.

    registry.py   load_template, list_templates, template_dirs: finding bundles by id
    check.py      check_bundle, check_dir: every problem of a bundle, one line each
    template.py   Template: a loaded bundle, rendering its prompt and validating summaries
    render.py     the sandboxed Jinja environment, render_partial_notes
    bundle.py     the bundle's file names and ids, where the built-ins are
    messages.py   one-line messages and schema errors in path order
"""

from __future__ import annotations

from maie.templates.bundle import (
    BUNDLE_FILES,
    EXAMPLE_FILE,
    PARTIAL_NOTES_FILE,
    PROMPT_FILE,
    SCHEMA_FILE,
    builtin_templates_dir,
)
from maie.templates.check import check_bundle, check_dir
from maie.templates.registry import list_templates, load_template, template_dirs
from maie.templates.render import render_partial_notes
from maie.templates.template import Template

__all__ = [
    "Template",
    "PROMPT_FILE",
    "SCHEMA_FILE",
    "EXAMPLE_FILE",
    "BUNDLE_FILES",
    "PARTIAL_NOTES_FILE",
    "builtin_templates_dir",
    "template_dirs",
    "load_template",
    "list_templates",
    "check_bundle",
    "check_dir",
    "render_partial_notes",
]
