"""Sphinx configuration of the sb3_ppo_variants documentation (SB3's and sb3-contrib's form).

Build: ``make docs`` (HTML with warnings as errors, then the code examples as doctests).
Nothing is fetched at build time: no intersphinx, no remote images.
"""

import os
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
