"""Test helper: a subprocess script that runs `modalab run` and SIGKILLs itself right after
optimizer step ``argv[1]`` (used by the resume and fault tests)."""

KILLER = """
import os, signal, sys
import modalab.experiment.runner as R
kill_at, fit = int(sys.argv[1]), R.fit
def killing_fit(*a, **k):
    after = k["after_step"]
    def hook(step):
        out = after(step)
        if step + 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    k["after_step"] = hook
    return fit(*a, **k)
R.fit = killing_fit
from modalab.cli import main
sys.exit(main(sys.argv[2:]))
"""
