"""Sphinx configuration of the sb3_ppo_variants documentation (SB3's and sb3-contrib's form).

Build: ``make docs`` (HTML with warnings as errors, then the code examples as doctests).
Nothing is fetched at build time: no intersphinx, no remote images.
"""

import os
import re
import sys

# the package is installed in the venv (editable); the path makes a plain checkout build too
sys.path.insert(0, os.path.abspath(".."))

import sb3_ppo_variants

project = "sb3_ppo_variants"
author = "sb3_ppo_variants developers"
copyright = "sb3_ppo_variants developers"
version = release = sb3_ppo_variants.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# MyST: $...$ / $$...$$ math and heading anchors for the Markdown pages
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# autodoc: SB3's form (class docstring with its :param: list, members listed per page)
autoclass_content = "class"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"

# doctest: every example runs in a temporary directory (models are saved there) with one torch thread
doctest_global_setup = """
import os
import tempfile

import torch

torch.set_num_threads(1)
_docs_cwd = os.getcwd()
_docs_tmp = tempfile.TemporaryDirectory()
os.chdir(_docs_tmp.name)
"""
doctest_global_cleanup = """
os.chdir(_docs_cwd)
_docs_tmp.cleanup()
"""

html_theme = "sphinx_rtd_theme"
html_title = f"sb3_ppo_variants {release}"
html_static_path = ["_static"] if os.path.isdir(os.path.join(os.path.dirname(__file__), "_static")) else []

# The plot command's and the zoo tools' pages are written separately: index.rst gets a toctree of whichever of
# them exist (at its TOOL_PAGES comment), so the site builds without them and a new one is never "not included in
# any toctree"; index is re-read on every build so that a page added later is picked up.
TOOL_PAGES = ("plot", "zoo_tools")


def _tool_pages_toctree(app, docname, source):
    if docname != "index":
        return
    here = os.path.dirname(os.path.abspath(__file__))
    pages = [page for page in TOOL_PAGES if any(os.path.exists(os.path.join(here, page + suffix)) for suffix in source_suffix)]
    if pages:
        toctree = ".. toctree::\n  :maxdepth: 1\n  :caption: Tools\n\n" + "".join(f"  {page}\n" for page in pages)
        source[0] = re.sub(r"^\.\. TOOL_PAGES:.*$", toctree, source[0], count=1, flags=re.MULTILINE)


def setup(app):
    app.connect("source-read", _tool_pages_toctree)
    app.connect("env-get-outdated", lambda app, env, added, changed, removed: ["index"])
