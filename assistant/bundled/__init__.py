"""Files the package reads at run time that live at the top of the repository: the prompt templates, the
metric modules and the licences of the catalog's base models.

``prompts``, ``metrics`` and ``licenses`` here are relative symbolic links to ``prompts/``, ``eval/metrics/``
and ``licenses/``, so the
repository keeps its documented layout while the files sit inside the package. A checkout or an editable
install reads the folders themselves through the links; building a wheel copies the files (package data in
pyproject.toml), so ``pip install .`` into any environment carries them. Nothing is imported from here: read
the folders by path (``prompts.PROMPTS_DIR``, ``metrics.METRICS_DIR``).
"""
