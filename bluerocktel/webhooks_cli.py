"""``bluerocktel webhooks ...``: subscribe provisioning endpoints, deliver, inspect and replay."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa


def cmd_webhooks_add(args) -> int:
    from bluerocktel.webhooks import create_subscription
    from bluerocktel.workbench import Workbench

    wb = Workbench.open(args.data_dir)
    events = [e.strip() for e in (args.events or "").split(",") if e.strip()]
    with wb.db.transaction() as s:
        sub, secret = create_subscription(s, wb.secret_key, args.name or args.url, args.url, events=events,
                                          actor="cli")
        sub_id = sub.id
    print(json.dumps({"id": sub_id, "secret": secret}) if args.json else
          f"webhook subscription {sub_id} -> {args.url}\nsigning secret (shown once): {secret}")
    return 0


def cmd_webhooks_list(args) -> int:
    from bluerocktel.db.models import WebhookSubscription
    from bluerocktel.workbench import Workbench

    wb = Workbench.open(args.data_dir)
    with wb.db.session() as s:
        rows = [{"id": w.id, "name": w.name, "url": w.url, "events": w.events or ["*"], "active": w.active}
                for w in s.scalars(sa.select(WebhookSubscription).order_by(WebhookSubscription.id))]
    for row in rows if not args.json else []:
        print(f"{row['id']:>4}  {'on ' if row['active'] else 'off'}  {row['url']}  {','.join(row['events'])}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def cmd_webhooks_deliver(args) -> int:
    from bluerocktel.webhooks import deliver_due
    from bluerocktel.workbench import Workbench

    wb = Workbench.open(args.data_dir)
    while True:
        counts = deliver_due(wb)
        print(json.dumps(counts) if args.json else
              f"attempted {counts['attempted']}: delivered {counts['delivered']}, retry later "
              f"{counts['pending']}, failed {counts['failed']}")
        if not args.watch:
            return 0
        time.sleep(args.watch)


def cmd_webhooks_deliveries(args) -> int:
    from bluerocktel.db.models import WebhookDelivery
    from bluerocktel.workbench import Workbench

    wb = Workbench.open(args.data_dir)
    with wb.db.session() as s:
        query = sa.select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(args.limit)
        if args.status:
            query = query.where(WebhookDelivery.status == args.status)
        rows = [{"id": d.id, "subscription": d.subscription_id, "event": d.event_id, "status": d.status,
                 "attempts": d.attempts, "last_status_code": d.last_status_code, "last_error": d.last_error,
                 "next_attempt_at": d.next_attempt_at, "delivered_at": d.delivered_at} for d in s.scalars(query)]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    for row in rows if not args.json else []:
        print(f"{row['id']:>6}  sub {row['subscription']}  event {row['event']}  {row['status']:<9} "
              f"attempts {row['attempts']}  {row['last_error'] or row['last_status_code'] or ''}")
    return 0


def cmd_webhooks_replay(args) -> int:
    from bluerocktel.webhooks import replay
    from bluerocktel.workbench import Workbench

    wb = Workbench.open(args.data_dir)
    with wb.db.transaction() as s:
        replay(s, args.delivery_id, actor="cli")
    print(f"delivery {args.delivery_id} will be sent again by the next `bluerocktel webhooks deliver`")
    return 0


def add_webhooks_parser(sub, common) -> None:
    """The ``webhooks`` command group."""
    hooks = sub.add_parser("webhooks", help="service-event webhooks").add_subparsers(dest="webhooks_command",
                                                                                     required=True)
    p = hooks.add_parser("add", parents=[common], help="subscribe a URL; prints its signing secret once")
    p.add_argument("url")
    p.add_argument("--name", default=None)
    p.add_argument("--events", default=None, help="comma-separated kinds (activated,suspended,...); default all")
    p.set_defaults(func=cmd_webhooks_add)
    p = hooks.add_parser("list", parents=[common], help="list subscriptions")
    p.set_defaults(func=cmd_webhooks_list)
    p = hooks.add_parser("deliver", parents=[common], help="send the due deliveries (once, or every N s)")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS")
    p.set_defaults(func=cmd_webhooks_deliver)
    p = hooks.add_parser("deliveries", parents=[common], help="the delivery log, newest first")
    p.add_argument("--status", choices=["pending", "delivered", "failed"], default=None)
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_webhooks_deliveries)
    p = hooks.add_parser("replay", parents=[common], help="send a delivery again")
    p.add_argument("delivery_id", type=int)
    p.set_defaults(func=cmd_webhooks_replay)
