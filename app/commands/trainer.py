"""``micrec trainer``: retrain on a schedule and/or after N new interactions, in a process
of its own (app/learning/retrain_scheduler.py); Prometheus metrics on its own port. Off by default: set
``MICREC_TRAINER_INTERVAL_S`` and/or ``MICREC_TRAINER_MIN_NEW_INTERACTIONS``."""

from __future__ import annotations

import argparse
import logging
import signal

from model.commands.runner import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trainer",
        help="retrain on a schedule / after N new interactions (micrec retrain, gated)",
    )
    p.add_argument("--env-file", help="read MICREC_* settings from this file (as micrec serve)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from app.learning.jobs import open_store, registry_of
    from app.learning.retrain_scheduler import RetrainScheduler
    from app.settings import load_settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    s = load_settings(env_file=args.env_file)
    registry_of(s)  # a clear error now rather than one failed run per check
    store = open_store(s)
    try:
        trainer = RetrainScheduler(s, store, env_file=args.env_file)
    except ValueError as err:
        raise UserError(str(err)) from None
    server, _ = start_http_server(
        s.trainer_metrics_port, s.trainer_metrics_host, registry=trainer.metrics.registry
    )
    signal.signal(signal.SIGTERM, trainer.shutdown)
    signal.signal(signal.SIGINT, trainer.shutdown)
    logging.getLogger("micrec.trainer").info(
        "trainer: every %ss and/or after %d new interactions; metrics on %s:%d",
        s.trainer_interval_s,
        s.trainer_min_new_interactions,
        s.trainer_metrics_host,
        s.trainer_metrics_port,
    )
    try:
        trainer.loop()
    finally:
        server.shutdown()
        store.close()
    return 0
