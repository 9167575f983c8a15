"""Releases of apps on a TCP socket: two vassals cannot bind one address (SO_REUSEPORT would
hand live requests to a release before its health gate), so the new release cannot start
beside the live one. The live vassal is stopped first, the new one binds the address and is
gated there, and if it fails the previous vassal is put back. The price is a short gap in
which connections to the address are refused (nginx answers 502): unix-socket apps have none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.config.settings import AppConfig
from fleet.errors import FleetError
from fleet.host.actions import Remove, WriteFile
from fleet.host.layout import AppPaths
from fleet.host.session import Session, Step
from fleet.server.emperor import wait_until_gone

if TYPE_CHECKING:
    from fleet.converge.rollout import Rollout


def free_address(session: Session, step: Step, app: AppConfig, rollout: Rollout) -> None:
    """Stop the live vassal of a TCP app so the new release can bind its address."""
    if app.tcp_address is None or not rollout.live or rollout.live == rollout.release:
        return
    paths = AppPaths(app.name)
    old = session.host.read(paths.vassal(rollout.live))
    if old is None:
        return
    rollout.stopped_live = old
    session.apply(step, [Remove(path=paths.vassal(rollout.live),
                                why=f"frees tcp:{app.tcp_address}: one vassal can bind it")])
    if not session.check and not wait_until_gone(session.host,
                                                    paths.vassal_id(rollout.live)):
        raise FleetError(f"the Emperor did not stop {paths.vassal_id(rollout.live)}")


def restore_live(session: Session, step: Step, app: AppConfig, rollout: Rollout) -> None:
    """The new release failed: once its vassal is gone, start the previous one again."""
    if rollout.stopped_live is None or not rollout.live:
        return
    paths = AppPaths(app.name)
    if not session.check:
        wait_until_gone(session.host, paths.vassal_id(rollout.release or ""))
    session.apply(step, [WriteFile(path=paths.vassal(rollout.live), content=rollout.stopped_live,
                                   mode=0o600,
                                   why="the previous release serves again")])
    rollout.stopped_live = None
