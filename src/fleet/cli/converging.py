"""What every command that changes the server ends with: check, converge, print the result.

Apart from common.py so that the commands that only look (status, check, logs, --version)
do not load converge's steps and the step reporter. The steps (fleet.converge.apply) are
imported once the remotes' ref checks are under way (fleet.converge.refs): the network
answers while Python loads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.cli.basics import OPTIONS, local_host, locked_state, read_input, require_root
from fleet.cli.output import out, print_json
from fleet.cli.report import SilentReporter, TextReporter, print_summary, summary_json
from fleet.config.envfile import check_env_files
from fleet.config.htpasswd import check_auth_files
from fleet.config.store import Desired, plan_store
from fleet.converge.refs import RefChecks
from fleet.errors import EXIT_FAILED, EXIT_OK
from fleet.host.actions import Action
from fleet.host.facts import FactsHost
from fleet.host.session import Session
from fleet.server.certs import check_tls_files
from fleet.server.ports import check_ports
from fleet.server.release import know_python_version
from fleet.server.users import check_identities

if TYPE_CHECKING:
    from fleet.converge.apply import Outcome


def do_apply(file: Path | None, *, prune: bool, check: bool, json_out: bool,
             hold: bool = False) -> int:
    """`fleet apply` and `fleet plan` (check): merge the file into the stored state under the
    run lock, then converge (or plan) it; with `hold` (`apply --hold-changes`, what `fleet
    push` asks) plan, and apply only if nothing would change."""
    require_root()
    text = read_input(file) if file is not None else None
    host = local_host()
    with locked_state(host, str(file) if file else None, text, prune=prune) as desired:
        if hold:
            return run_held(desired, json_out=json_out)
        return run_converge(desired, json_out=json_out, check=check)


def reporter(json_out: bool, show_diffs: bool = False) -> TextReporter | SilentReporter:
    if json_out:
        return SilentReporter()
    return TextReporter(verbose=OPTIONS.verbose, quiet=OPTIONS.quiet, show_diffs=show_diffs)


def run_converge(desired: Desired, *, json_out: bool, check: bool, only: set[str] | None = None,
                 extra: dict[str, object] | None = None,
                 pre_actions: Sequence[Action] = (), first: Sequence[Action] = ()) -> int:
    """Check, then converge (or plan) the stored state and print the result. `pre_actions`
    join the "fleet config" step; `first` are files a command already validated (an htpasswd
    file, an env file) that the checks below must see, so they are written before them."""
    host = FactsHost(local_host())  # facts gathered once per run, not once per app
    refs = RefChecks.for_run(host, desired.config, only=only, check=check)
    know_python_version(host)
    session = Session(host, reporter(json_out, show_diffs=check), check=check)
    session.act(first)
    check_config(host, desired)
    outcome = walk(desired, session, only=only, pre_actions=pre_actions, refs=refs)
    return finish(desired, session, outcome, json_out=json_out, check=check, extra=extra)


def run_held(desired: Desired, *, json_out: bool) -> int:
    """`apply --hold-changes`: plan, and apply only when the plan shows nothing to change.

    What `fleet push` asks each host: one start of fleet decides whether the host would
    change and, when it would not, runs the apply's checks (health, the fronts' upstreams)
    right away, where plan-then-apply took two starts. Both runs hold the one run lock, so
    nothing changes between the decision and the apply; they share the run's facts, which
    a plan never changes, and the remotes' answers: the apply acts on the refs the plan saw
    (a commit pushed in between waits for the next push, never slips in as "no change").
    A host that would change (or whose plan failed) is left untouched and answers with its
    plan, marked held: push takes it out of the fronts' rotation first, then applies."""
    host = FactsHost(local_host())
    refs = RefChecks.for_run(host, desired.config, only=None, check=True)  # for both walks
    know_python_version(host)
    planned = Session(host, SilentReporter(), check=True)
    check_config(host, desired)
    outcome = walk(desired, planned, refs=refs)
    counts = planned.counts()
    if counts["changed"] or counts["failed"] or outcome.aborted is not None:
        code = finish(desired, planned, outcome, json_out=json_out, check=True,
                      extra={"held": True})
        if not json_out:
            out.print("held: nothing applied (--hold-changes); `fleet plan` shows the changes")
        return code
    session = Session(host, reporter(json_out), check=False)
    outcome = walk(desired, session, refs=refs)
    return finish(desired, session, outcome, json_out=json_out, check=False,
                  extra={"held": False})


def check_config(host: FactsHost, desired: Desired) -> None:
    """What must hold before any change: each raises a ConfigError (exit 2)."""
    check_env_files(host, desired.config)  # a bad secrets file: exit 2 before any change
    check_auth_files(host, desired.config)  # a bad htpasswd file: likewise
    check_ports(host, desired.config)  # a TCP address already taken: exit 2, likewise
    check_tls_files(host, desired.config)  # so does a missing or mismatched cert/key
    check_identities(host, desired.config)  # an app user fleet did not create: likewise


def walk(desired: Desired, session: Session, *, only: set[str] | None = None,
         pre_actions: Sequence[Action] = (), refs: RefChecks | None = None) -> Outcome:
    """The stored state's step, then every step of converge (or of its plan)."""
    from fleet.converge.apply import Outcome, converge  # see the module's docstring

    outcome = Outcome()
    try:
        with session.step("fleet config") as step:
            session.apply(step, [*plan_store(session.host, desired), *pre_actions])
        outcome = converge(desired.config, session, only=only, refs=refs)
    except Exception as exc:  # a step failed in a way the session could not attribute
        if not session.steps or session.steps[-1].error is None:
            raise
        outcome.aborted = str(exc)
    return outcome


def finish(desired: Desired, session: Session, outcome: Outcome, *, json_out: bool,
           check: bool, extra: dict[str, object] | None) -> int:
    """Print the run's result (text or JSON); its exit status."""
    notes = {"kept": desired.kept, "pruned": desired.pruned}
    if json_out:
        print_json(summary_json(session, outcome, {**notes, **(extra or {})}))
    else:
        if desired.kept:
            out.print(f"kept apps not named in the file: {', '.join(desired.kept)} "
                      "(--prune removes them)")
        print_summary(out, session, outcome, plan=check)
    failed = session.counts()["failed"] > 0 or outcome.aborted is not None
    return EXIT_FAILED if failed else EXIT_OK
