"""The recipes shipped with modalab (package ``modalab.recipes``): YAML files only, listed by
``modalab recipes list``. This folder is mapped into the package by pyproject.toml."""
