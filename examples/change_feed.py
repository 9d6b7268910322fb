#!/usr/bin/env python3
"""A downstream job that follows the uid2-bucket-sync change feed.

Python standard library only. It loops:

    uid2-bucket-sync changes --after SEQ --limit N --json

applies each record (here: prints it; put your own update in `apply`,
e.g. replace `previous_uid2` with `uid2` in your audience tables, or drop
the identity on `optout`), and after each batch saves the last `seq` it
applied to the position file, atomically. A crash between applying and
saving re-applies at most that batch next time, so `apply` must be safe to
repeat. `seq` values are never reused, even after the daemon prunes old
records (`mapping.change_retention`): read the feed more often than that.

    change_feed.py [--db PATH | --config FILE] [--position-file PATH]
                   [--batch N] [--until-empty] [--poll SECONDS]

Exit status: 0 when stopped by --until-empty or Ctrl-C, 1 when the CLI
reports an error.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def apply(record):
    """Apply one change to your own data."""
    if record["status"] == "mapped":
        was = record["previous_uid2"] or "none"
        print(f"{record['id']}: uid2 {record['uid2']} (was {was})", flush=True)
    else:
        print(f"{record['id']}: {record['status']}, drop its uid2", flush=True)


def read_position(path):
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0


def save_position(path, seq):
    """Writes the position so that a crash leaves the old one or the new one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{seq}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.environ.get("UID2_BUCKET_SYNC_BIN", "uid2-bucket-sync"))
    parser.add_argument("--db", help="database file (default: from the configuration)")
    parser.add_argument("--config", help="configuration file")
    parser.add_argument("--position-file", default="change_feed.position", help="where the last applied seq is kept")
    parser.add_argument("--batch", type=int, default=10000, help="records per read")
    parser.add_argument("--until-empty", action="store_true", help="stop when no new record is left")
    parser.add_argument("--poll", type=float, default=60.0, help="seconds to wait when nothing is new")
    args = parser.parse_args()

    base = [args.binary]
    if args.config:
        base += ["--config", args.config]
    if args.db:
        base += ["--db", args.db]

    position = read_position(args.position_file)
    try:
        while True:
            read = subprocess.run(
                base + ["changes", "--after", str(position), "--limit", str(args.batch), "--json"],
                capture_output=True,
                text=True,
            )
            if read.returncode != 0:
                print(read.stderr.strip(), file=sys.stderr)
                return 1
            records = [json.loads(line) for line in read.stdout.splitlines()]
            for record in records:
                apply(record)
            if records:
                position = records[-1]["seq"]
                save_position(args.position_file, position)
            if len(records) < args.batch:
                if args.until_empty:
                    return 0
                time.sleep(args.poll)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
