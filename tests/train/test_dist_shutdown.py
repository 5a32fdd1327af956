"""dist.shutdown: leaves the process group (after a barrier on a clean exit) and is a no-op without one."""

import gc

import torch.distributed as dist

from modalab.train import dist as D


def test_shutdown_leaves_the_group_and_frees_what_held_it(tmp_path, monkeypatch):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("gc") or 0)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    D.shutdown()
    assert not dist.is_initialized()
    assert calls == ["gc"]  # a world of one has no peer to wait for; the collection runs before destroy
    D.shutdown()  # nothing to leave: no error


def test_shutdown_waits_for_the_peers_on_a_clean_exit_only(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    D.shutdown()
    D.shutdown(sync=False)  # an error path: a barrier there could wait for a rank that never comes
    assert calls == ["barrier", "destroy", "destroy"]
