"""`modalab run --nproc N` hands torchrun GLOO_SOCKET_IFNAME=lo (train.ddp.gloo_socket_ifname)
unless the user set it; null leaves the environment alone."""

import os
from pathlib import Path

import pytest

from modalab.cli import main

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "clip_digits.yaml")


class Exec(Exception):
    pass


@pytest.fixture
def launched(monkeypatch):
    seen = {}

    def fake_execvp(prog, cmd):
        seen["cmd"], seen["ifname"] = cmd, os.environ.get("GLOO_SOCKET_IFNAME")
        raise Exec

    monkeypatch.setattr(os, "execvp", fake_execvp)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    return seen


@pytest.mark.parametrize("over, preset, want", [
    ([], None, "lo"),
    (["train.ddp.gloo_socket_ifname=eth7"], None, "eth7"),
    (["train.ddp.gloo_socket_ifname=null"], None, None),
    ([], "ens5", "ens5"),  # the user's own setting wins
])
def test_gloo_interface_for_torchrun(launched, monkeypatch, over, preset, want):
    if preset is not None:
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", preset)
    with pytest.raises(Exec):
        main(["run", RECIPE, "--nproc", "2", *over])
    assert "torch.distributed.run" in launched["cmd"]
    assert launched["ifname"] == want
