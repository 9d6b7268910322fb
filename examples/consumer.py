#!/usr/bin/env python3
"""A batch job that consumes the uid2-bucket-sync re-mapping queue.

Python standard library only. It loops:

    uid2-bucket-sync queue claim --limit N --lease 5m --json

re-maps the identifiers of each claimed bucket (here: prints and sleeps;
put your POST /v2/identity/map calls in `remap`), acks what succeeded by
feeding the lease ids to `queue ack` on stdin, and fails what raised with
`queue fail --error`. Delivery is at-least-once: a bucket whose lease
expired before the ack is delivered again, so re-mapping must be safe to
repeat.

    consumer.py [--db PATH | --config FILE] [--batch N] [--lease DUR]
                [--until-empty] [--poll SECONDS]

Exit status: 0 when stopped by --until-empty or Ctrl-C, 1 when the CLI
reports an error.
"""

import argparse
import json
import os
import subprocess
import sys
import time

LEASES_REFUSED = 3  # `queue ack` / `queue fail`: some leases were no longer held


class RemapError(Exception):
    pass


def remap(bucket_id, last_updated, simulated_failures):
    """Re-map every identifier whose raw UID2 depends on `bucket_id`."""
    if bucket_id in simulated_failures:
        raise RemapError(f"identity map refused the batch for bucket {bucket_id}")
    print(f"re-mapping identifiers of bucket {bucket_id} (rotated {last_updated})", flush=True)
    time.sleep(0.001)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.environ.get("UID2_BUCKET_SYNC_BIN", "uid2-bucket-sync"))
    parser.add_argument("--db", help="database file (default: from the configuration)")
    parser.add_argument("--config", help="configuration file")
    parser.add_argument("--batch", type=int, default=500, help="buckets per claim")
    parser.add_argument("--lease", default="5m", help="how long a claim is held, e.g. 5m")
    parser.add_argument("--worker", default=f"consumer.py-{os.getpid()}")
    parser.add_argument(
        "--until-empty", action="store_true", help="stop when a claim returns nothing instead of waiting for more"
    )
    parser.add_argument("--poll", type=float, default=30.0, help="seconds to wait when nothing is pending")
    parser.add_argument(
        "--simulate-failure",
        action="append",
        default=[],
        metavar="BUCKET_ID",
        help="make re-mapping this bucket fail (to try the fail path)",
    )
    args = parser.parse_args()

    global_options = []
    if args.config:
        global_options += ["--config", args.config]
    if args.db:
        global_options += ["--db", args.db]

    def run(*command, stdin=None):
        completed = subprocess.run(
            [args.binary, *global_options, *command],
            input=stdin,
            stdout=subprocess.PIPE,
            text=True,
        )
        if completed.returncode not in (0, LEASES_REFUSED):
            sys.exit(f"consumer: `{' '.join(command[:2])}` failed with exit code {completed.returncode}")
        if completed.returncode == LEASES_REFUSED:
            print("consumer: some leases had expired; their buckets will be delivered again", file=sys.stderr)
        return completed.stdout

    try:
        while True:
            claimed = run(
                "queue", "claim",
                "--limit", str(args.batch),
                "--lease", args.lease,
                "--worker", args.worker,
                "--json",
            )
            items = [json.loads(line) for line in claimed.splitlines() if line]
            if not items:
                if args.until_empty:
                    return 0
                time.sleep(args.poll)
                continue

            done = []
            for item in items:
                try:
                    remap(item["bucket_id"], item["last_updated"], args.simulate_failure)
                    done.append(item["lease_id"])
                except RemapError as error:
                    run("queue", "fail", item["lease_id"], "--error", str(error))
            if done:
                run("queue", "ack", stdin="".join(f"{lease}\n" for lease in done))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
