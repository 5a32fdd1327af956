import pytest

from modalab import registry
from modalab.registry import RegistryError, register


def test_duplicate_registration_is_an_error():
    @register("testkind", "thing")
    def a():
        """first"""

    try:
        with pytest.raises(RegistryError, match="duplicate registration: testkind 'thing' is already registered"):

            @register("testkind", "thing")
            def b():
                """second"""
    finally:
        registry.unregister("testkind", "thing")


def test_unknown_name_lists_known():
    with pytest.raises(RegistryError, match="unknown loss 'nope'; registered loss names: .*info_nce"):
        registry.get("loss", "nope")


def test_list_shows_every_kind(capsys):
    from modalab.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind, name in [("loss", "info_nce"), ("model", "two_tower"), ("source", "digits"), ("source", "manifest"),
                       ("task", "contrastive")]:
        assert f"{kind}:" in out and name in out
    assert main(["list", "loss"]) == 0
    assert "model:" not in capsys.readouterr().out


def test_listing_from_source_equals_the_imported_registry():
    """``modalab list`` reads @register lines with ast; it must say what importing everything says."""
    imported = [(e.kind, e.name, e.description) for e in registry.entries()
                if e.builder.__module__.startswith("modalab.")]
    assert registry.declared_entries() == imported
    assert registry.declared_entries("task") == [x for x in imported if x[0] == "task"]
    with pytest.raises(RegistryError, match="unknown kind 'nope'"):
        registry.declared_entries("nope")


def test_builder_modules_are_found_by_walking_the_package():
    mods = registry.builder_modules()
    assert mods == sorted(mods) and "modalab.registry" not in mods
    for m in ("modalab.tasks.contrastive", "modalab.tasks.unified", "modalab.models.temporal_localizer",
              "modalab.vision.tokenizer_builders", "modalab.text.next_token", "modalab.data.sources.digits"):
        assert m in mods
    owners = {e.builder.__module__ for e in registry.entries() if e.builder.__module__.startswith("modalab.")}
    assert owners <= set(mods)


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["list", "loss"]])
def test_help_and_list_import_no_heavy_library(argv):
    import subprocess
    import sys

    heavy = ["torch", "numpy", "librosa", "av", "soundfile", "matplotlib", "scipy", "sklearn", "pydantic"]
    code = ("import sys\nfrom modalab.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & set(%r)))" % (argv, heavy))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "LOADED []"
