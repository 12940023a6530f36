"""Console logging that reads well in a terminal and in a file (called from ``settings.py``).

``conf/logging.yml`` writes the console as plain one-line records (``logging.StreamHandler``):
right for ``kedro run > run.txt``, CI and pipes, where Rich would lay every record out on an
80-column grid (wrapped and padded). When the stream *is* a terminal, those console handlers are
swapped for Kedro's ``RichHandler`` (colours, rich tracebacks) with the same level and filters.
Python warnings are routed to logging (so they reach ``logs/``), the folders of the configured log
files are created (``logs/`` may be deleted), and one third-party warning repeated on every
command is silenced (see :data:`THIRD_PARTY_WARNINGS`).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from compcars_kedro.processes import owner_alive, process_start

#: Warnings raised by other packages' code on every ``kedro`` command, with why they are dropped.
#: MLflow raises them under ``warnings.simplefilter("once")`` (a ``warnings`` filter cannot stop
#: them), so they are dropped from the ``py.warnings`` logger instead.
THIRD_PARTY_WARNINGS = (
    # kedro-mlflow's KedroPipelineModel.predict has no type hints; MLflow warns when the class
    # is defined (import of the kedro-mlflow plugin, after settings.py). The project's own pyfunc
    # model (compcars_kedro.mlflow_model) is type-hinted; a test checks it raises no warning.
    ("Add type hints to the `predict` method", "kedro_mlflow"),
)


def _third_party_warning(record: logging.LogRecord) -> bool:
    """A ``logging`` filter: False for a :data:`THIRD_PARTY_WARNINGS` record, i.e. its text
    matches and it is raised while code of that package runs (the frames on the stack)."""
    text = record.getMessage()
    for fragment, package in THIRD_PARTY_WARNINGS:
        if fragment in text:
            frame = sys._getframe()
            while frame is not None:
                if f"{package}/" in frame.f_code.co_filename.replace("\\", "/"):
                    return False
                frame = frame.f_back
    return True


#: Environment variable holding "<pid> <start>" of the process that rotates ``logs/kedro.log``.
ROTATOR_ENV = "COMPCARS_LOG_ROTATOR"


class SharedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """``RotatingFileHandler`` for a log that several processes of one run append to.

    Ray workers, DDP ranks and other processes started in the project folder read
    ``conf/logging.yml`` too, so they append to the same ``logs/kedro.log``. With plain
    ``RotatingFileHandler`` each would rotate on its own: a process renames the file another
    has just started, and records land in rotated files. Here only the first process rotates
    (its pid goes into :data:`ROTATOR_ENV`, inherited by the processes it starts); the others
    never rotate, and reopen the file when it was rotated under them (as
    ``logging.handlers.WatchedFileHandler`` does), so every record goes to the current file.
    """

    def __init__(self, filename: str, *args: object, **kwargs: object) -> None:
        super().__init__(filename, *args, **kwargs)  # type: ignore[arg-type]
        me = f"{os.getpid()} {process_start(os.getpid())}"  # pid and start: no reused pid
        pid, _, start = os.environ.get(ROTATOR_ENV, "").partition(" ")
        if not pid.isdigit() or not owner_alive({"pid": pid,
                                                 "start": None if start == "None" else start}):
            os.environ[ROTATOR_ENV] = me
        self.rotates = os.environ[ROTATOR_ENV] == me

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 - logging's name
        if self.rotates:
            return bool(super().shouldRollover(record))
        if self.stream is not None:
            try:
                on_disk = os.stat(self.baseFilename)
                mine = os.fstat(self.stream.fileno())
                moved = (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino)
            except OSError:
                moved = True
            if moved:  # rotated (or deleted) by the rotating process: follow the name
                self.stream.close()
                self.stream = self._open()
        return False


def _loggers() -> list[logging.Logger]:
    named = [lg for lg in logging.Logger.manager.loggerDict.values()
             if isinstance(lg, logging.Logger)]
    return [logging.getLogger(), *named]


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def _rich_copy(handler: logging.StreamHandler) -> logging.Handler:
    from kedro.logging import RichHandler

    rich = RichHandler(rich_tracebacks=True, show_path=False)
    rich.setLevel(handler.level)
    for flt in handler.filters:
        rich.addFilter(flt)
    return rich


def _shared_copy(handler: logging.handlers.RotatingFileHandler) -> SharedRotatingFileHandler:
    """The same file, size and backups, rotated by one process only (conf/logging.yml names
    plain ``RotatingFileHandler``: Kedro accepts logging classes only from ``logging`` and
    ``kedro.logging`` unless an environment variable allows more)."""
    shared = SharedRotatingFileHandler(handler.baseFilename, mode=handler.mode,
                                       maxBytes=handler.maxBytes, backupCount=handler.backupCount,
                                       encoding=handler.encoding, delay=True)
    shared.setLevel(handler.level)
    shared.setFormatter(handler.formatter)
    for flt in handler.filters:
        shared.addFilter(flt)
    handler.close()
    return shared


def share_rotating_file_handlers() -> int:
    """Swap every plain ``RotatingFileHandler`` (``conf/logging.yml``'s ``logs/kedro.log``) for a
    :class:`SharedRotatingFileHandler`; returns how many. Called for the ``kedro`` process (from
    :func:`configure_console_logging`) and in Ray workers, which read conf/logging.yml too."""
    files: dict[int, logging.Handler] = {}
    for lg in _loggers():
        for handler in list(lg.handlers):
            if type(handler) is logging.handlers.RotatingFileHandler:
                if id(handler) not in files:
                    files[id(handler)] = _shared_copy(handler)
                lg.removeHandler(handler)
                lg.addHandler(files[id(handler)])
    return len(files)


def configure_console_logging(use_rich: bool | None = None) -> int:
    """Rich console handlers in a terminal, plain ones elsewhere; the rotating log file
    rotated by one process (:class:`SharedRotatingFileHandler`); log folders; warnings.

    ``use_rich`` forces the choice (default: whether the handler's stream is a terminal).
    Returns the number of console handlers swapped for Rich ones.
    """
    logging.captureWarnings(True)
    py_warnings = logging.getLogger("py.warnings")
    if _third_party_warning not in py_warnings.filters:
        py_warnings.addFilter(_third_party_warning)
    share_rotating_file_handlers()
    swapped: dict[int, logging.Handler] = {}
    for lg in _loggers():
        for handler in list(lg.handlers):
            if isinstance(handler, logging.FileHandler):
                Path(handler.baseFilename).parent.mkdir(parents=True, exist_ok=True)
                continue
            if type(handler) is not logging.StreamHandler:
                continue
            if handler.stream not in (sys.stdout, sys.stderr):
                continue
            if not (use_rich if use_rich is not None else _is_terminal(handler.stream)):
                continue
            rich = swapped.setdefault(id(handler), _rich_copy(handler))
            lg.removeHandler(handler)
            lg.addHandler(rich)
    return len(swapped)


#: Exception types the project raises on purpose with a message that says what is wrong and
#: what to run (parameter validation, missing weights, data that disagrees, a busy work dir).
CLEAR_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError)
#: ``COMPCARS_TRACEBACK=1`` shows the full traceback on the console too.
TRACEBACK_ENV = "COMPCARS_TRACEBACK"


def _raised_by_project(tb: object) -> bool:
    """Whether the innermost frame of traceback ``tb`` is the project's own code."""
    last = tb
    while getattr(last, "tb_next", None) is not None:
        last = last.tb_next  # type: ignore[attr-defined]
    filename = last.tb_frame.f_code.co_filename  # type: ignore[attr-defined]
    return filename.startswith(str(Path(__file__).resolve().parent) + os.sep)


def _log_files() -> list[logging.FileHandler]:
    seen: dict[int, logging.FileHandler] = {}
    for lg in _loggers():
        for h in lg.handlers:
            if isinstance(h, logging.FileHandler):
                seen.setdefault(id(h), h)
    return list(seen.values())


def install_short_errors() -> None:
    """``sys.excepthook`` for the ``kedro`` command: an error the project raised on purpose
    (:data:`CLEAR_ERRORS` from its own code) is printed as its message alone, with its full
    traceback written to the log file (``logs/kedro.log``); anything else, or when no log file
    is configured, or with ``COMPCARS_TRACEBACK=1``, keeps the usual traceback."""
    previous = sys.excepthook
    if getattr(previous, "_compcars_short_errors", False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: object) -> None:
        files = _log_files()
        if (not issubclass(exc_type, CLEAR_ERRORS) or tb is None or not files
                or os.environ.get(TRACEBACK_ENV) == "1" or not _raised_by_project(tb)):
            previous(exc_type, exc, tb)  # type: ignore[arg-type]
            return
        record = logging.LogRecord("compcars_kedro", logging.ERROR, __file__, 0,
                                   "%s", (f"{exc_type.__name__}: {exc}",),
                                   (exc_type, exc, tb))  # type: ignore[arg-type]
        for h in files:
            h.handle(record)
            h.flush()
        where = ", ".join(h.baseFilename for h in files)
        sys.stderr.write(f"\nError ({exc_type.__name__}): {exc}\n\n(the full traceback is in "
                         f"{where}; {TRACEBACK_ENV}=1 shows it here)\n")

    hook._compcars_short_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook
