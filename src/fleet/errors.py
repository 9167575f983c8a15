"""Error types and exit codes: one root error so the CLI can print one line, never a traceback."""

from __future__ import annotations

from typing import Protocol

from fleet.masking import mask_urls

EXIT_OK = 0
EXIT_FAILED = 1  # something did not converge or a health check failed
EXIT_INVALID = 2  # invalid input: nothing on the server was touched


class FleetError(Exception):
    """Root of every error fleet reports to a user as one line."""

    exit_code = EXIT_FAILED


class ConfigError(FleetError):
    """Invalid configuration or command-line input; raised before anything is changed."""

    exit_code = EXIT_INVALID

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(one_line(where + problem))


def one_line(text: str) -> str:
    """Control characters escaped (a key may hold a newline): the error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class CommandError(FleetError):
    """A command fleet ran exited non-zero; carries its output for the report."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        tail = (stderr.strip() or stdout.strip()).splitlines()[-1:] or [""]
        super().__init__(mask_urls(f"{argv[0]} exited {returncode}: {tail[0]}"))

    def output_tail(self, lines: int = 20) -> str:
        """The last lines of the command's output, where its reason for failing usually is."""
        text = (self.stdout + "\n" + self.stderr).strip()
        return mask_urls("\n".join(text.splitlines()[-lines:]))


class LockError(FleetError):
    """Another fleet run holds the lock."""


class NotRoot(FleetError):
    """A command that reads or changes root-only state, run by another user: nothing was
    touched, so it is refused like bad input (exit 2), in one line instead of a traceback."""

    exit_code = EXIT_INVALID


class UnknownApp(FleetError):
    """A command named an app that is not configured: bad input, nothing was touched."""

    exit_code = EXIT_INVALID

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(one_line(f"no app named {name!r} in /etc/fleet/apps "
                                  f"(configured: {', '.join(known) or 'none'})"))


class UnknownName(FleetError):
    """A command named a worker or job the app does not have: bad input, like UnknownApp."""

    exit_code = EXIT_INVALID

    def __init__(self, option: str, kind: str, app: str, known: list[str]) -> None:
        super().__init__(one_line(f"{option}: app {app} has no {kind} by that name "
                                  f"(configured: {', '.join(known) or 'none'})"))


class FailedStep(Protocol):
    """What StepFailed carries: a session's step record (fleet.host.session.Step), named by
    shape so this module imports no layer."""

    name: str
    error: str | None


class StepFailed(Exception):
    """A step failed; its record already says why. Callers decide how far the failure reaches."""

    def __init__(self, step: FailedStep) -> None:
        super().__init__(step.error)
        self.step = step


class AnswerError(OSError):
    """An app's socket answered in a way fleet will not read: named, never a hang. An OSError,
    so each caller's existing `except OSError` names it as that app's failure."""


class AnswerTooSlow(AnswerError):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"answer too slow (not complete within {seconds:g} s)")


class AnswerTooLarge(AnswerError):
    def __init__(self, cap: int) -> None:
        super().__init__(f"answer too large (over {cap} bytes)")
