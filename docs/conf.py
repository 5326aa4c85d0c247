"""Sphinx configuration of the pyro_svae documentation.

Build (from the repository root; CI runs the same with warnings as errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The tutorials in ``docs/tutorials`` are rendered by sphinx-gallery *without* being executed (pytest
runs them, in smoke mode, in ``tests/test_tutorials.py``). Set ``PYRO_SVAE_DOCS_EXECUTE=1`` to
execute them during the build and embed their output and figures (a few minutes per tutorial; add
``PYRO_SVAE_SMOKE=1`` for the tiny budgets).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))  # gallery_reset

import pyro_svae  # noqa: E402

project = "pyro_svae"
author = "pyro_svae contributors"
copyright = "pyro_svae contributors"
version = release = pyro_svae.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "tutorials/README.rst",  # the gallery header, copied by sphinx-gallery into auto_tutorials/
    "auto_tutorials/*.ipynb",
    "auto_tutorials/*.py",
    "auto_tutorials/*.zip",
]
# No intersphinx: the build must work offline.

# -- autodoc ----------------------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# -- MyST (the markdown pages) ----------------------------------------------------------------
myst_enable_extensions: list[str] = []  # no dollarmath: a stray "$" in prose must stay a "$"
myst_heading_anchors = 3

# -- sphinx-gallery (the tutorials) -----------------------------------------------------------
_EXECUTE = os.environ.get("PYRO_SVAE_DOCS_EXECUTE") == "1"

sphinx_gallery_conf = {
    "examples_dirs": "tutorials",
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"tutorial_\d\d_",
    "ignore_pattern": r"__init__\.py",
    "plot_gallery": _EXECUTE,
    "write_computation_times": _EXECUTE,  # no sg_execution_times.rst when nothing is executed
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    # executed tutorials share one process: each starts with an empty param store and float32
    "reset_modules": ("matplotlib", "gallery_reset.reset_state"),
}

# -- HTML -------------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"pyro_svae {release}"
html_static_path: list[str] = []
