"""pytest configuration of the repository.

The book's notebooks (``chapters/*.md``, ``exercises/*.md``) are tests executed by nbval
(``--nbval-lax --nbval-current-env``, set in ``pyproject.toml``). Markdown is not a format
nbval reads, so the plugin ``tests/nbval_markdown.py`` converts each notebook with jupytext
into ``_build/nbval/`` and hands it to nbval's collector; see its docstring for how failures
are reported, how long a notebook may run and how a cell's output is frozen.
"""

pytest_plugins = ["nbval_markdown"]  # tests/ is on sys.path through `pythonpath`
