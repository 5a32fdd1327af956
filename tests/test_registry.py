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
    for kind, name in [("loss", "info_nce"), ("model", "two_tower"), ("source", "digits"), ("source", "manifest"), ("task", "contrastive")]:
        assert f"{kind}:" in out and name in out
    assert main(["list", "loss"]) == 0
    assert "model:" not in capsys.readouterr().out
