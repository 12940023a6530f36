"""Console and log file: conf/logging.yml, plain lines off a terminal, warnings fixed at source."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from compcars_kedro.logsetup import _third_party_warning, configure_console_logging
from tests.conftest import ROOT, kedro_cli, make_project_copy


@pytest.fixture
def isolated_logger(tmp_path: Path):
    """A logger with a plain stdout console and a delayed file handler in a missing folder."""
    lg = logging.getLogger("compcars_test_logsetup")
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.WARNING)
    log_file = tmp_path / "missing" / "kedro.log"
    file = logging.FileHandler(log_file, delay=True)
    lg.handlers[:] = [console, file]
    yield lg, console, log_file
    lg.handlers[:] = []


def test_console_stays_plain_off_a_terminal_and_turns_rich_in_one(isolated_logger) -> None:
    from rich.logging import RichHandler

    lg, console, log_file = isolated_logger
    assert configure_console_logging(use_rich=False) == 0
    assert console in lg.handlers
    assert log_file.parent.is_dir()  # the log folder is created
    configure_console_logging(use_rich=True)
    rich = [h for h in lg.handlers if isinstance(h, RichHandler)]
    assert console not in lg.handlers and len(rich) == 1
    assert rich[0].level == logging.WARNING  # the level is kept
    assert any(isinstance(h, logging.FileHandler) for h in lg.handlers)  # the file untouched


def test_third_party_warning_is_dropped_only_when_raised_from_that_package() -> None:
    record = logging.LogRecord("py.warnings", logging.WARNING, __file__, 1,
                               "%s", ("x.py:1: UserWarning: Add type hints to the `predict` "
                                      "method to enable data validation",), None)
    assert _third_party_warning(record)  # raised from here: kept
    fake = {"__name__": "kedro_mlflow_fake"}
    code = compile("result = check(record)", "/site-packages/kedro_mlflow/mlflow/x.py", "exec")
    fake.update(check=_third_party_warning, record=record)
    exec(code, fake)  # noqa: S102 - a frame whose file is inside kedro_mlflow
    assert fake["result"] is False


def test_project_pyfunc_predict_is_type_hinted() -> None:
    import mlflow.pyfunc  # noqa: F401 - import MLflow's own warnings first

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from mlflow.pyfunc.utils.data_validation import _get_func_info_if_type_hint_supported

        from compcars_kedro.mlflow_model import EmbeddingModel

        _get_func_info_if_type_hint_supported(EmbeddingModel.predict)
    assert not [w for w in caught if "type hint" in str(w.message)]


def test_retrieval_metrics_on_read_only_arrays_do_not_warn() -> None:
    # torch warns once per process: check in a fresh interpreter
    code = (
        "import numpy as np\n"
        "from compcars_kedro.training.metrics import retrieval_metrics\n"
        "e = np.random.default_rng(0).normal(size=(12, 4)).astype('float32')\n"
        "l = np.repeat(np.arange(3), 4)\n"
        "e.flags.writeable = False; l.flags.writeable = False\n"
        "print(retrieval_metrics(e, l, device='cpu'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "not writable" not in out.stderr


def test_logging_config_sends_dataset_lines_to_the_file_only() -> None:
    config = yaml.safe_load((ROOT / "conf" / "logging.yml").read_text())
    catalog_logger = config["loggers"]["kedro.io.data_catalog"]
    assert catalog_logger["propagate"] is False
    assert set(catalog_logger["handlers"]) == {"file", "console_warnings"}
    assert config["handlers"]["console_warnings"]["level"] == "WARNING"
    assert config["handlers"]["file"]["filename"].startswith("logs/")


@pytest.mark.slow
def test_kedro_run_writes_a_full_log_and_a_short_unwrapped_console(tmp_path: Path,
                                                                    tiny_sample: Path) -> None:
    from tests.conftest import TINY_LOCAL_PARAMETERS

    project = make_project_copy(tmp_path / "project", tiny_sample,
                                {"parameters.yml": TINY_LOCAL_PARAMETERS})
    (project / "conf" / "logging.yml").write_text((ROOT / "conf" / "logging.yml").read_text())
    result = kedro_cli(project, "run", "--pipelines", "data_engineering")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    console = result.stdout + result.stderr
    log = (project / "logs" / "kedro.log").read_text()
    # the file has every dataset load/save, the console none of them
    assert log.count("Loading data from") + log.count("Saving data to") >= 10
    assert "Loading data from" not in console and "Saving data to" not in console
    # one record per line: the long first line is not wrapped at 80 columns
    line = next(x for x in console.splitlines() if "as logging configuration" in x)
    assert "KEDRO_LOGGING_CONFIG environment variable accordingly" in line
    assert "Add type hints" not in console and "not writable" not in console
    # project INFO kept (the task count follows the data_engineering pipeline's node count)
    assert "parsed" in console and re.search(r"Completed (\d+) out of \1 tasks", console)


CHILD_LOGGER = """
import logging, sys
from HANDLER_MODULE import HANDLER as Handler
h = Handler(sys.argv[1], maxBytes=300, backupCount=50, delay=True)
lg = logging.getLogger("child"); lg.addHandler(h); lg.setLevel(logging.INFO)
lg.info("child line 1")  # short: the child's own size check never asks for a rotation
print("rotates" if getattr(h, "rotates", True) else "appends", flush=True)
sys.stdin.readline()  # the parent writes (and rotates the file) meanwhile
lg.info("child line 2")
h.close()
"""


@pytest.mark.parametrize("shared", [True, False])
def test_only_the_first_process_rotates_the_shared_log(tmp_path: Path, monkeypatch,
                                                       shared: bool) -> None:
    """A process started by the run (a Ray worker) appends to the current log and never rotates
    it; with plain RotatingFileHandler its later lines go to the rotated file it still holds."""
    from logging.handlers import RotatingFileHandler

    from compcars_kedro.logsetup import ROTATOR_ENV, SharedRotatingFileHandler

    monkeypatch.delenv(ROTATOR_ENV, raising=False)
    log = tmp_path / "kedro.log"
    cls = SharedRotatingFileHandler if shared else RotatingFileHandler
    parent = cls(str(log), maxBytes=300, backupCount=50, delay=True)
    assert getattr(parent, "rotates", True)
    script = CHILD_LOGGER.replace("HANDLER_MODULE", cls.__module__).replace("HANDLER",
                                                                             cls.__name__)
    child = subprocess.Popen([sys.executable, "-c", script, str(log)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    lg = logging.getLogger("compcars_test_rotation")
    try:
        assert child.stdout.readline().strip() == ("appends" if shared else "rotates")
        lg.handlers[:] = [parent]
        lg.setLevel(logging.INFO)
        lg.propagate = False
        for i in range(5):
            lg.info("parent line %d %s", i, "y" * 100)
        child.communicate("go\n", timeout=60)
    finally:
        child.kill()
        parent.close()
        lg.handlers[:] = []
    # oldest file first: kedro.log.N ... kedro.log.1, kedro.log
    files = sorted(tmp_path.glob("kedro.log.*"), key=lambda p: -int(p.suffix[1:])) + [log]
    order = [" ".join(line.split()[:3]) for p in files for line in p.read_text().splitlines()]
    written = ["child line 1", *(f"parent line {i}" for i in range(5)), "child line 2"]
    if shared:  # every record kept, the files in the order they were written
        assert order == written
    else:  # what the shared handler prevents: the child's line goes to the rotated file
        assert order == ["child line 1", "parent line 0", "parent line 1", "child line 2",
                         "parent line 2", "parent line 3", "parent line 4"]


def test_a_clear_project_error_is_one_message_and_its_traceback_goes_to_the_log(
        tmp_path: Path, tiny_sample: Path) -> None:
    project = make_project_copy(tmp_path / "project", tiny_sample)
    (project / "conf" / "logging.yml").write_text((ROOT / "conf" / "logging.yml").read_text())
    (project / "logs").mkdir()  # as in the checkout (logs/.gitkeep)
    bad = ("run", "--params", "model=vgg16")
    result = kedro_cli(project, *bad)
    console = result.stdout + result.stderr
    assert result.returncode == 1
    assert "model='vgg16' is unknown" in console and "Traceback" not in console
    assert "logs/kedro.log; COMPCARS_TRACEBACK=1 shows it here" in console
    log = (project / "logs" / "kedro.log").read_text()
    assert "Traceback (most recent call last)" in log and "model='vgg16' is unknown" in log
    import os

    full = subprocess.run([str(Path(sys.executable).with_name("kedro")), *bad], cwd=project,
                          env={**os.environ, "COMPCARS_TRACEBACK": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert full.returncode == 1 and "Traceback (most recent call last)" in full.stderr


def test_an_error_from_outside_the_project_keeps_its_traceback(tmp_path: Path,
                                                               monkeypatch) -> None:
    from compcars_kedro import logsetup

    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: seen.append(exc))
    logsetup.install_short_errors()
    hook = sys.excepthook
    lg = logging.getLogger("compcars_test_short_errors")
    lg.handlers[:] = [logging.FileHandler(tmp_path / "x.log", delay=True)]
    try:
        try:
            int("not a number")  # a ValueError raised here, in the tests, not the package
        except ValueError as exc:
            hook(type(exc), exc, exc.__traceback__)
    finally:
        lg.handlers[:] = []
    assert len(seen) == 1 and isinstance(seen[0][1], ValueError)  # the usual hook ran
