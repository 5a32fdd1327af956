"""Only the package list lives here: every package under src/, plus ``modalab.recipes``, which
pyproject.toml maps to the top-level recipes/ folder (a find over src/ alone cannot see it)."""

from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "modalab.recipes"])
