"""``micrec bundles``: the bundle registry from the command line.

    micrec bundles list                      versions, status, the current one marked *
    micrec bundles show V                    one version as JSON (meta, refusal, history)
    micrec bundles add DIR [--promote]       copy a bundle in as the next version
    micrec bundles promote V [--force]       make V current; every replica reloads it
    micrec bundles promote V --canary 10%    serve V to 10 % of users first (a canary)
    micrec bundles canary status|promote|abort   the running canary: show, promote, roll back
    micrec bundles rollback                  back to the previously promoted version
    micrec bundles refuse V                  mark V refused (never served without --force)

The registry is ``--registry`` or ``MICREC_REGISTRY_DIR``. ``promote``, ``rollback`` and
``add --promote`` also announce the version in the store (``MICREC_STORE_URL`` /
``--env-file``: run them with the service's settings), which every replica polls
(app/lifecycle/bundle_follow.py). Exit status: 0 done; 2 refused (unknown version, refused
candidate, bundle fails its check, bad settings), one line on stderr; 1 the registry was
switched but the store could not be told (run the same promote again).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.commands.runner import UserError
from model.registry import BundleRegistry, RegistryError

if TYPE_CHECKING:
    from app.store.base import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bundles",
        help="bundle registry: list, show, add, promote (or canary), rollback, refuse",
        description="The bundle registry (--registry or MICREC_REGISTRY_DIR). promote and "
        "rollback also announce the version in the store (MICREC_STORE_URL), so every "
        "replica serving from the registry reloads it.",
    )
    # Accepted before or after the action (``bundles --registry R list`` or ``bundles list
    # --registry R``); SUPPRESS keeps an action's missing option from hiding the other.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", default=argparse.SUPPRESS, help="registry directory "
                        "(MICREC_REGISTRY_DIR)")  # fmt: skip
    common.add_argument("--env-file", default=argparse.SUPPRESS,
                        help="read MICREC_* settings (store URL) from this file")  # fmt: skip
    p.add_argument("--registry", help=argparse.SUPPRESS)
    p.add_argument("--env-file", help=argparse.SUPPRESS)
    cmds = p.add_subparsers(dest="action", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        return cmds.add_parser(name, help=help, parents=[common])

    c = action("list", "every version, oldest first; * = current")
    c.add_argument("--json", action="store_true", help="one JSON list")
    c = action("show", "one version as JSON")
    c.add_argument("version")
    c = action("add", "copy a bundle directory in as the next version")
    c.add_argument("bundle_dir")
    c.add_argument("--promote", action="store_true", help="promote it right away")
    c.add_argument("--reason", default="added by hand", help="recorded in the history")
    c = action("promote", "make a version current; every replica reloads it")
    c.add_argument("version")
    c.add_argument("--reason", default="promoted by hand", help="recorded in the history")
    c.add_argument("--force", action="store_true", help="promote a refused version anyway")
    c.add_argument("--canary", metavar="SHARE", help="serve it to this share of users first "
                   "(10%% or 0.1); the canary rule (MICREC_CANARY_*) or `bundles canary` decides")  # fmt: skip
    c = action("canary", "the running canary: status, promote (now), abort (roll back)")
    c.add_argument("what", choices=("status", "promote", "abort"))
    c.add_argument("--reason", default="decided by hand", help="recorded in the history")
    c = action("rollback", "back to the previously promoted version")
    c.add_argument("--reason", default="rolled back by hand", help="recorded in the history")
    c = action("refuse", "mark a version refused (kept, never served)")
    c.add_argument("version")
    c.add_argument("--reason", default="refused by hand", help="recorded in the history")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from app.settings import load_settings

    settings = load_settings(
        env_file=args.env_file
    )  # SettingsError: one line (model.commands.runner)
    root = args.registry or settings.registry_dir
    if root is None:
        raise UserError("no registry: pass --registry DIR or set MICREC_REGISTRY_DIR")
    try:
        registry = BundleRegistry(Path(root), create=args.action == "add")
        return _ACTIONS[args.action](registry, args, settings.store_url)
    except RegistryError as err:
        raise UserError(str(err)) from None


def _list(registry: BundleRegistry, args: argparse.Namespace, store_url: str) -> int:
    versions = registry.list()
    if args.json:
        print(json.dumps([v.to_json() for v in versions], indent=1, default=str))
        return 0
    if not versions:
        print(f"no versions in {registry.root} (micrec bundles add DIR)")
        return 0
    print(f"  {'version':<8} {'status':<9} {'added (UTC)':<19} model_version")
    for v in versions:
        mark = "*" if v.status == "promoted" else " "
        added = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.added_at))
        print(f"{mark} {v.version:<8} {v.status:<9} {added:<19} {v.model_version or '-'}")
    return 0


def _show(registry: BundleRegistry, args: argparse.Namespace, store_url: str) -> int:
    info = registry.show(args.version).to_json()
    v = args.version  # events of this version, and those that replaced it
    info["history"] = [e for e in registry.history() if v in (e.get("version"), e.get("previous"))]
    print(json.dumps(info, indent=1, default=str))
    return 0


def _add(registry: BundleRegistry, args: argparse.Namespace, store_url: str) -> int:
    version = registry.add(args.bundle_dir, meta={"source": str(args.bundle_dir)})
    print(f"added {version} ({registry.path(version)})")
    if args.promote:
        return _announced(registry, store_url, version, args.reason, force=False)
    return 0


def _promote(registry: BundleRegistry, args: argparse.Namespace, store_url: str) -> int:
    if args.canary is not None:
        return _start_canary(registry, args, store_url)
    return _announced(registry, store_url, args.version, args.reason, force=args.force)


def _start_canary(registry: BundleRegistry, args: argparse.Namespace, store_url: str) -> int:
    from app.lifecycle.canary import parse_share, start_canary

    try:
        share = parse_share(args.canary)
    except ValueError as err:
        raise UserError(str(err)) from None
    with _store(store_url) as store:
        c = start_canary(registry, store, args.version, share, force=args.force)
    print(
        f"canary {c.version} for {100 * c.share:g} % of users (current "
        f"{registry.current()}); announced in {_shown(store_url)}"
    )
    return 0


def _canary(registry: BundleRegistry, args: argparse.Namespace, store_url: str) -> int:
    from app.commands.canary_status import canary_report
    from app.lifecycle.canary import Outcome, finish_canary
    from app.settings import load_settings

    settings = load_settings(env_file=args.env_file)
    with _store(store_url) as store:
        canary = store.get_canary()
        if args.what == "status":
            print(json.dumps(canary_report(settings, registry, store, canary), indent=1))
            return 0
        if canary is None or canary.decided is not None:
            raise UserError("no canary runs (or it was decided already)")
        outcome: Outcome = "promote" if args.what == "promote" else "rollback"
        if not finish_canary(registry, store, canary, outcome, args.reason):
            raise UserError("another process decided the canary first")
    verb = "promoted" if outcome == "promote" else "rolled back (refused)"
    print(f"canary {canary.version} {verb}; announced in {_shown(store_url)}")
    return 0


@contextmanager
def _store(store_url: str) -> Iterator[Store]:
    from app.store.base import StoreUnavailable
    from app.store.factory import create_store

    try:
        store = create_store(store_url)
    except ValueError as err:
        raise UserError(str(err)) from None
    try:
        yield store
    except StoreUnavailable as err:
        raise UserError(f"the store {_shown(store_url)} could not be reached: {err}") from None
    finally:
        store.close()


def _rollback(registry: BundleRegistry, args: argparse.Namespace, store_url: str) -> int:
    return _announced(registry, store_url, None, args.reason, force=False)


def _refuse(registry: BundleRegistry, args: argparse.Namespace, store_url: str) -> int:
    registry.refuse(args.version, {"reason": args.reason, "by": "micrec bundles refuse"})
    print(f"refused {args.version}")
    return 0


def _announced(
    registry: BundleRegistry, store_url: str, version: str | None, reason: str, *, force: bool
) -> int:
    """Promote ``version`` (None: roll back) and announce it in the store."""
    from app.lifecycle import promotion
    from app.store.factory import create_store

    try:
        store = create_store(store_url)
    except ValueError as err:
        raise UserError(str(err)) from None
    try:
        if version is None:
            done = promotion.rollback(registry, store, reason=reason)
        else:
            done = promotion.promote(registry, store, version, reason=reason, force=force)
    finally:
        store.close()
    verb = "rolled back to" if version is None else "promoted"
    was = f" (was {done.previous})" if done.previous else ""
    if not done.announced:
        print(
            f"micrec bundles: error: {done.version} is current in {registry.root}, but the "
            f"store {_shown(store_url)} could not be told ({done.error}); replicas keep "
            f"their version until `micrec bundles promote {done.version}` succeeds",
            file=sys.stderr,
        )
        return 1
    print(f"{verb} {done.version}{was}; announced in {_shown(store_url)}")
    return 0


def _shown(url: str) -> str:
    """The store URL without a password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


_ACTIONS: dict[str, Any] = {
    "list": _list,
    "show": _show,
    "add": _add,
    "promote": _promote,
    "canary": _canary,
    "rollback": _rollback,
    "refuse": _refuse,
}
