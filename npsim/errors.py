"""The errors npsim reports to the people who use it.

Every error a user can cause (a bad config, missing data, an unusable
trajectory file, a backend this machine lacks, settings that cannot work
together) is an :class:`NpsimError`. The ``npsim`` command prints such an
error as one ``npsim: error:`` line and exits with status 2; anything else
that escapes is a bug in npsim and keeps its traceback (exit status 1).

Errors about one argument of a component (a node model's slope, a rule's
sigma) are :class:`ParameterError`, a ``ValueError`` as NumPy raises for a
bad argument; the config layer turns them into a :class:`ConfigError` that
names the key and the file.
"""

from __future__ import annotations

__all__ = [
    "NpsimError", "UsageError", "ParameterError", "ConfigError", "SweepError", "IncompatibleSettings", "DataError", "DataNotFound",
    "DataFormatError", "TrajectoryError", "TrajectoryBusy", "TrajectoryFinished", "TrajectoryNotFound", "NoCheckpoint",
    "TrajectoryCorrupt", "BackendUnavailable", "Diverged", "OutputError", "ResourceError", "Interrupted",
]


class NpsimError(Exception):
    """A problem with the user's input or environment; the message is one line that says what to change."""


class ParameterError(ValueError):
    """One parameter of a component is invalid.

    component : what was being built, e.g. ``"leaky_relu"`` or ``"np"``.
    param : the parameter's name (dotted for nested ones), or "" when the
        problem is the combination of several.
    problem : what is wrong, e.g. ``"must be less than 1"``.
    value : the value given (shown in the message unless ``None``).
    """

    def __init__(self, component: str, param: str, problem: str, value=None, *, show_value: bool = True):
        self.component, self.param, self.problem, self.value = component, param, problem, value
        where = f"{component}: {param} " if param else f"{component}: "
        got = f" (got {value!r})" if show_value and value is not None else ""
        super().__init__(f"{where}{problem}{got}")

    def __reduce__(self):  # picklable across worker processes
        return (_rebuild_parameter_error, (self.component, self.param, self.problem, self.value, str(self)))


def _rebuild_parameter_error(component, param, problem, value, text):
    err = ParameterError(component, param, problem, value)
    err.args = (text,)
    return err


class UsageError(NpsimError, ValueError):
    """An argument of a command or analysis function cannot be used (a plot file type, an empty list of runs)."""


class ConfigError(NpsimError, ValueError):
    """A config file, override or sweep file is missing, unreadable or invalid (names the key and the file)."""


class SweepError(ConfigError):
    """A sweep file or sweep index is missing, unreadable or invalid, or a sweep's out folder is in use."""


class IncompatibleSettings(NpsimError, ValueError):
    """Settings that are each valid but cannot work together (e.g. BP on a network of step units)."""


class DataError(NpsimError, ValueError):
    """A data set cannot be used."""


class DataNotFound(DataError, FileNotFoundError):
    """No usable copy of a data set was found.

    The message names every place searched, with the reason it was not
    usable, on one line. ``places`` holds the same as a list of
    ``(place, reason)`` pairs for printing one per line.
    """

    def __init__(self, name: str, places: list[tuple[str, str]], hint: str | None = None,
                 env_var: str = "NPSIM_DATA"):
        self.name = name
        self.places = list(places)
        self._hint = hint
        self._env_var = env_var
        looked = ", ".join(f"{p} ({why})" for p, why in self.places) or "nowhere"
        if hint is None:
            hint = f"Set {env_var} to a directory holding it, or pass a path."
        super().__init__(f"data set {name!r} not found; looked in: {looked}. {hint}")

    def __str__(self) -> str:  # FileNotFoundError would format errno/filename otherwise
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.name, self.places, self._hint, self._env_var))


class DataFormatError(DataError):
    """A data file is corrupt, truncated, or does not hold what was expected (names the file)."""


class TrajectoryError(NpsimError, ValueError):
    """A trajectory file cannot be used; the message names the file and the problem."""


class TrajectoryBusy(TrajectoryError):
    """The file is being written by a live process (this one or another on this host)."""


class TrajectoryFinished(TrajectoryError):
    """The run in the file has finished: there is nothing to resume."""


class TrajectoryNotFound(TrajectoryError, FileNotFoundError):
    """No file at the path given."""

    def __str__(self) -> str:
        return self.args[0]


class NoCheckpoint(TrajectoryError):
    """The file holds no checkpoint to resume from."""


class TrajectoryCorrupt(TrajectoryError):
    """The file is damaged: unreadable, truncated, or inconsistent with itself."""


class BackendUnavailable(NpsimError, RuntimeError):
    """The requested array backend cannot run on this machine."""


class Diverged(NpsimError, RuntimeError):
    """The loss or the parameters of a run became NaN or infinite."""


class OutputError(NpsimError, OSError):
    """An output (trajectory file, plot, sweep folder) cannot be written where it was asked for."""


class ResourceError(NpsimError, MemoryError):
    """A run needs more memory (or disk) than the machine has."""


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop (SIGINT, or SIGTERM as SLURM and Dask send); ``signum`` says which."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signum)
