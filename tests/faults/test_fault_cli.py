"""One CLI error path: every modalab error type prints one line and exits 2, an interruption
exits 128 + signal, and ``--traceback`` / ``MODALAB_DEBUG=1`` show the full trace."""

import argparse
import signal

import pytest
from fault_helpers import RECIPE

from modalab.audio.io import AudioError
from modalab.cli import main, run_command
from modalab.config import ConfigError
from modalab.data.dataset import DataError
from modalab.data.tar_shards import ShardError
from modalab.errors import ModalabError, ResumeError
from modalab.experiment.signals import Interrupted
from modalab.experiment.sweep import SweepError
from modalab.registry import RegistryError
from modalab.train.engine import TrainingError
from modalab.video.decode import VideoError

ERRORS = [AudioError, ShardError, TrainingError, VideoError, SweepError, RegistryError, ResumeError,
          ConfigError, DataError]


@pytest.mark.parametrize("cls", ERRORS)
def test_every_modalab_error_is_one_line_and_exit_2(cls, capsys):
    """Before: AudioError, ShardError, TrainingError ... escaped as tracebacks."""
    assert issubclass(cls, ModalabError)

    def boom(args):
        raise cls("where.yaml:3: what was wrong and what was expected")

    assert run_command(boom, argparse.Namespace()) == 2
    err = capsys.readouterr().err
    assert err == "error: where.yaml:3: what was wrong and what was expected\n"


def test_os_errors_are_one_line(capsys):
    def boom(args):
        open("/nonexistent/dir/file")

    assert run_command(boom, argparse.Namespace()) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "/nonexistent/dir/file" in err and err.count("\n") == 1


@pytest.mark.parametrize("exc,code", [(KeyboardInterrupt(), 130), (Interrupted(signal.SIGTERM, 7), 143),
                                      (Interrupted(signal.SIGHUP), 129)])
def test_interruptions_exit_128_plus_signal(exc, code, capsys):
    def stop(args):
        raise exc

    assert run_command(stop, argparse.Namespace()) == code
    assert capsys.readouterr().err.startswith("interrupted")


def test_traceback_flag_and_debug_env_reraise(monkeypatch, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {RECIPE}\ntrain: {{steps: true}}\n")
    assert main(["run", str(bad), "--dry-run"]) == 2
    with pytest.raises(ConfigError, match="got a boolean"):
        main(["--traceback", "run", str(bad), "--dry-run"])
    monkeypatch.setenv("MODALAB_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(["run", str(bad), "--dry-run"])


def test_real_commands_fail_with_one_line(tmp_path, capsys):
    assert main(["run", RECIPE, "run.seed=-1", "--dry-run"]) == 2
    assert main(["run", RECIPE, "data.root=a\0b", "--dry-run"]) == 2
    assert main(["doctor", str(tmp_path)]) == 2
    assert main(["compare", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert "run.seed" in lines[0] and "NUL byte" in lines[1] and "Traceback" not in "".join(lines)


def test_error_from_a_dataloader_worker_is_one_line(capsys):
    from torch._utils import ExceptionWrapper

    def boom(args):
        try:
            raise ShardError("s/shard-000003.tar: corrupted shard after member '000000007.txt'")
        except ShardError:
            ExceptionWrapper(where="in DataLoader worker process 0").reraise()

    assert run_command(boom, argparse.Namespace()) == 2
    assert capsys.readouterr().err == "error: s/shard-000003.tar: corrupted shard after member '000000007.txt'\n"
