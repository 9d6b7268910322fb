#!/usr/bin/env python3
"""The official UID2 Python SDK (uid2-client 2.9.0) against `dev-operator`.

If the SDK reads the simulated operator correctly, the simulator's envelope,
JSON and timestamp dialect match the real operator's.

Usage: sdk_interop.py PATH_TO_UID2_BUCKET_SYNC

Starts two operators with the same seed: a static one (checked against the
table it dumps with --dump) and a rotating one (checked against the rotations
it logs). Both serve the buckets endpoint and the two identity-map endpoints:
the SDK's IdentityMapV3Client and (v2) IdentityMapClient must read consistent
mappings from them, and see a rotated bucket's identities get a new UID2 with
the old one as `previous`. Credentials reach them through the environment,
never argv.
Prints one line per check and a final `interop: N passed, M failed`; exits
non-zero on any failure.
"""

import base64
import datetime as dt
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
from importlib import metadata

from uid2_client import (
    IdentityMapClient,
    IdentityMapInput,
    IdentityMapV3Client,
    IdentityMapV3Input,
    UnmappedIdentityReason,
    normalize_and_hash_email,
    normalize_and_hash_phone,
)
from uid2_client.request_response_util import (
    auth_headers,
    create_envelope,
    make_binary_request,
    parse_response,
)

BUCKETS = 2000
SEED = 20260324
ROTATE_EVERY = "1s"
ROTATE_COUNT = 3
API_KEY = "interop-api-key"
SECRET = base64.b64encode(os.urandom(32)).decode()
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
LISTENING = re.compile(r"^dev-operator listening on (http://\S+) with (\d+) buckets$")
ROTATION = re.compile(r"rotated bucket ids at=(\S+) bucket_ids=(\S+)")
STARTUP_TIMEOUT_S = 60
ROTATION_TIMEOUT_S = 30


def parse_operator_time(text):
    """`yyyy-MM-ddTHH:mm:ss.SSS` (UTC, no zone) as an aware datetime."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.timezone.utc)


class Operator:
    """A dev-operator process, its address and what it logs."""

    def __init__(self, binary, extra_args, log_filter="info"):
        env = dict(os.environ, UID2_API_KEY=API_KEY, UID2_CLIENT_SECRET=SECRET, RUST_LOG=log_filter)
        args = [binary, "dev-operator", "--listen", "127.0.0.1:0", "--buckets", str(BUCKETS),
                "--seed", str(SEED)] + extra_args
        self.process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.rotations = []  # (at text, [bucket ids]) in log order
        self.stderr_tail = []
        self._lock = threading.Lock()
        self._stdout = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            line = self._stdout.get(timeout=STARTUP_TIMEOUT_S)
        except queue.Empty:
            line = None
        match = LISTENING.match(line or "")
        if not match:
            self.stop()
            raise RuntimeError(f"dev-operator did not report listening; stdout {line!r}, "
                               f"stderr: {self.stderr()}")
        self.base_url = match.group(1)
        self.bucket_count = int(match.group(2))

    def _read_stdout(self):
        for line in self.process.stdout:
            self._stdout.put(line.rstrip("\n"))
        self._stdout.put(None)

    def _read_stderr(self):
        for line in self.process.stderr:
            with self._lock:
                self.stderr_tail = (self.stderr_tail + [line.rstrip("\n")])[-20:]
                found = ROTATION.search(line)
                if found:
                    self.rotations.append((found.group(1), found.group(2).split(",")))

    def logged_rotations(self):
        with self._lock:
            return list(self.rotations)

    def stderr(self):
        with self._lock:
            return "\n".join(self.stderr_tail)

    def stop(self):
        """SIGTERM, then the exit code (killing it if it does not stop)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode


def client(operator, api_key=API_KEY, secret=SECRET):
    return IdentityMapClient(operator.base_url, api_key, secret)


def v3_client(operator, api_key=API_KEY, secret=SECRET):
    return IdentityMapV3Client(operator.base_url, api_key, secret)


def sdk_request(operator, path, payload):
    """Sends `payload` (a dict) through the SDK's envelope as a binary request; returns the JSON answer."""
    secret = base64.b64decode(SECRET)
    envelope = create_envelope(secret, dt.datetime.now(tz=dt.timezone.utc), json.dumps(payload).encode())
    response = make_binary_request(operator.base_url, path, auth_headers(API_KEY), envelope)
    return json.loads(parse_response(secret, response, envelope.nonce))


def raw_uid_bytes(text):
    return len(base64.b64decode(text, validate=True))


def is_future_utc_midnight(moment):
    return (moment.tzinfo is not None and moment > dt.datetime.now(dt.timezone.utc)
            and (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0))


def phones(count):
    return [f"+1555{n:07d}" for n in range(count)]


def buckets_since(operator, since):
    response = client(operator).get_identity_buckets(since)
    return {b.get_bucket_id(): b.get_last_updated() for b in response.buckets}, len(response.buckets)


def read_dump(path):
    table = {}
    with open(path) as dump:
        for line in dump:
            bucket_id, last_updated = line.rstrip("\n").split("\t")
            table[bucket_id] = last_updated
    return table


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def expect_http_error(code, call):
    try:
        call()
    except urllib.error.HTTPError as error:
        expect(error.code == code, f"expected HTTP {code}, got {error.code}")
        return
    raise AssertionError(f"expected HTTP {code}, but the call succeeded")


def run_checks(binary, workdir):
    dump_path = os.path.join(workdir, "table.tsv")
    static = Operator(binary, ["--dump", dump_path])
    rotating = None
    try:
        dump = read_dump(dump_path)
        rotating = Operator(binary, ["--rotate-every", ROTATE_EVERY, "--rotate-count", str(ROTATE_COUNT)],
                            log_filter="info,uid2_bucket_sync::simulator=debug")
        checks = []

        def check(function):
            checks.append(function)
            return function

        @check
        def listening_line_reports_the_bucket_count():
            expect(static.bucket_count == BUCKETS, f"{static.bucket_count} buckets")
            expect(len(dump) == BUCKETS, f"dump has {len(dump)} distinct ids")

        @check
        def since_1970_returns_every_bucket_with_its_time():
            got, rows = buckets_since(static, EPOCH)
            expect(rows == BUCKETS, f"{rows} rows")
            expect(got == dump, "rows differ from the dumped table")

        @check
        def since_now_returns_no_buckets():
            got, rows = buckets_since(static, dt.datetime.now(dt.timezone.utc))
            expect(rows == 0, f"{rows} rows")

        @check
        def since_is_inclusive():
            times = sorted(set(dump.values()))
            boundary = times[len(times) // 2]
            got, _ = buckets_since(static, parse_operator_time(boundary))
            expected = {k: v for k, v in dump.items() if v >= boundary}
            expect(got == expected, f"{len(got)} rows, {len(expected)} expected at {boundary}")

        @check
        def binary_envelope_round_trips_through_the_sdk():
            secret = base64.b64decode(SECRET)
            body = json.dumps({"since_timestamp": "1970-01-01T00:00:00"}).encode()
            envelope = create_envelope(secret, dt.datetime.now(tz=dt.timezone.utc), body)
            response = make_binary_request(static.base_url, "/v2/identity/buckets",
                                           auth_headers(API_KEY), envelope)
            payload = json.loads(parse_response(secret, response, envelope.nonce))
            expect(payload["status"] == "success", payload["status"])
            got = {row["bucket_id"]: row["last_updated"] for row in payload["body"]}
            expect(got == dump, "binary answer differs from the dumped table")

        @check
        def a_wrong_api_key_raises():
            expect_http_error(401, lambda: client(static, api_key="not-the-key")
                              .get_identity_buckets(EPOCH))

        @check
        def a_wrong_client_secret_raises():
            other = base64.b64encode(os.urandom(32)).decode()
            expect_http_error(400, lambda: client(static, secret=other).get_identity_buckets(EPOCH))

        @check
        def v3_maps_emails_phones_and_hashes():
            other_hash = normalize_and_hash_email("other@example.com")
            phone_hash = normalize_and_hash_phone("+441234567890")
            identities = (IdentityMapV3Input()
                          .with_emails(["user@example.com", "optout@example.com"])
                          .with_phones(["+12345678901", "+00000000000"])
                          .with_hashed_email(other_hash)
                          .with_hashed_phone(phone_hash)
                          .with_hashed_email("not-a-hash"))
            response = v3_client(static).generate_identity_map(identities)
            mapped, unmapped = response.mapped_identities, response.unmapped_identities
            expect(set(mapped) == {"user@example.com", "+12345678901", other_hash, phone_hash},
                   f"mapped {sorted(mapped)}")
            expect(set(unmapped) == {"optout@example.com", "+00000000000", "not-a-hash"},
                   f"unmapped {sorted(unmapped)}")
            for key, identity in mapped.items():
                expect(raw_uid_bytes(identity.current_raw_uid) == 32, f"{key}: u is not 32 bytes")
                expect(is_future_utc_midnight(identity.refresh_from), f"{key}: refresh_from {identity.refresh_from}")
            expect(len({identity.current_raw_uid for identity in mapped.values()}) == 4, "two identities share a UID2")
            for key in ("optout@example.com", "+00000000000"):
                expect(unmapped[key].reason == UnmappedIdentityReason.OPTOUT, f"{key}: {unmapped[key].raw_reason}")
            expect(unmapped["not-a-hash"].reason == UnmappedIdentityReason.INVALID_IDENTIFIER,
                   unmapped["not-a-hash"].raw_reason)

        @check
        def v3_normalizes_raw_emails_as_the_sdk_does_and_refuses_a_bad_one():
            # The SDK only sends hashes; raw values go through its envelope directly.
            answer = sdk_request(static, "/v3/identity/map",
                                 {"email": [" User@Example.com", "a@ba@z.com"], "phone": ["+1234"]})
            expect(answer["status"] == "success", answer["status"])
            body = answer["body"]
            expected = v3_client(static).generate_identity_map(
                IdentityMapV3Input.from_emails(["user@example.com"])).mapped_identities["user@example.com"]
            expect(body["email"][0]["u"] == expected.current_raw_uid, "raw and SDK-hashed email differ")
            expect(body["email"][1] == {"e": "invalid identifier"}, f"bad email: {body['email'][1]}")
            expect(body["phone"] == [{"e": "invalid identifier"}], f"bad phone: {body['phone']}")
            expect(body["email_hash"] == [] and body["phone_hash"] == [], "absent keys are not empty arrays")

        @check
        def v2_maps_consistently_with_v3():
            emails = ["user@example.com", "other@example.com", "optout@example.com"]
            v2 = client(static).generate_identity_map(IdentityMapInput.from_emails(emails))
            v3 = v3_client(static).generate_identity_map(IdentityMapV3Input.from_emails(emails))
            expect(set(v2.mapped_identities) == {"user@example.com", "other@example.com"},
                   f"v2 mapped {sorted(v2.mapped_identities)}")
            for email in ("user@example.com", "other@example.com"):
                expect(v2.mapped_identities[email].get_raw_uid() == v3.mapped_identities[email].current_raw_uid,
                       f"{email}: v2 and v3 UID2s differ")
                expect(v2.mapped_identities[email].get_bucket_id() in dump, f"{email}: unknown bucket")
            expect(v2.unmapped_identities["optout@example.com"].get_reason() == "optout",
                   v2.unmapped_identities["optout@example.com"].get_reason())

            by_phone = client(static).generate_identity_map(IdentityMapInput.from_phones(["+12345678901"]))
            phone_hash = normalize_and_hash_phone("+12345678901")
            by_hash = client(static).generate_identity_map(IdentityMapInput.from_hashed_phones([phone_hash, "bad"]))
            expect(by_hash.mapped_identities[phone_hash].get_raw_uid()
                   == by_phone.mapped_identities["+12345678901"].get_raw_uid(), "phone and its hash differ")
            expect(by_hash.unmapped_identities["bad"].get_reason() == "invalid identifier",
                   by_hash.unmapped_identities["bad"].get_reason())

        def our_map(api, identifiers):
            """Runs this project's `map --json` against `static`; its lines keyed by identifier."""
            config = os.path.join(workdir, "map.toml")
            with open(config, "w") as file:
                file.write(f'[operator]\nbase_url = "{static.base_url}"\n')
            env = dict(os.environ, UID2_API_KEY=API_KEY, UID2_CLIENT_SECRET=SECRET)
            env.pop("UID2_BUCKET_SYNC_CONFIG", None)
            done = subprocess.run([binary, "--config", config, "map", "--json", "--api", api, "-"],
                                  input="\n".join(identifiers) + "\n", capture_output=True,
                                  text=True, env=env, timeout=60)
            expect(done.returncode == 0, f"map --api {api} failed: {done.stderr.strip()}")
            lines = [json.loads(line) for line in done.stdout.splitlines()]
            expect([line["identifier"] for line in lines] == identifiers, "map answered out of order")
            return {line["identifier"]: line for line in lines}

        @check
        def our_v3_client_gets_what_the_sdks_v3_client_gets():
            emails = ["user@example.com", "JANE.SAOIRSE@gmail.com", "optout@example.com"]
            phone_numbers = ["+12345678901", "+441234567890", "+00000000000"]
            sdk = v3_client(static).generate_identity_map(
                IdentityMapV3Input.from_emails(emails).with_phones(phone_numbers))
            ours = our_map("v3", emails + phone_numbers)
            for identifier in emails + phone_numbers:
                line = ours[identifier]
                if identifier in sdk.mapped_identities:
                    identity = sdk.mapped_identities[identifier]
                    expect(line["uid2"] == identity.current_raw_uid, f"{identifier}: u differs")
                    expect(line["previous_uid2"] == identity.previous_raw_uid, f"{identifier}: p differs")
                    ours_r = dt.datetime.fromisoformat(line["refresh_from"].replace("Z", "+00:00"))
                    expect(ours_r == identity.refresh_from, f"{identifier}: r {ours_r} vs {identity.refresh_from}")
                    expect(line["unmapped"] is None, f"{identifier}: {line['unmapped']}")
                else:
                    reason = sdk.unmapped_identities[identifier].raw_reason
                    expect(line["uid2"] is None and line["unmapped"] == reason,
                           f"{identifier}: ours {line['unmapped']}, the SDK's {reason}")
            expect(len(sdk.mapped_identities) == 4, f"SDK mapped {sorted(sdk.mapped_identities)}")

        @check
        def our_v2_client_gets_what_the_sdks_v2_client_gets():
            emails = ["user@example.com", "other@example.com", "optout@example.com"]
            sdk = client(static).generate_identity_map(IdentityMapInput.from_emails(emails))
            ours = our_map("v2", emails)
            for email in emails:
                line = ours[email]
                if email in sdk.mapped_identities:
                    identity = sdk.mapped_identities[email]
                    expect(line["uid2"] == identity.get_raw_uid(), f"{email}: UID2 differs")
                    expect(line["bucket_id"] == identity.get_bucket_id(), f"{email}: bucket differs")
                else:
                    reason = sdk.unmapped_identities[email].get_reason()
                    expect(line["unmapped"] == reason, f"{email}: ours {line['unmapped']}, the SDK's {reason}")
            expect(len(sdk.mapped_identities) == 2, f"SDK mapped {sorted(sdk.mapped_identities)}")

        @check
        def the_workers_stored_mapping_equals_what_the_sdks_v3_client_gets():
            """identities import + remap, then identities export and changes, against the SDK."""
            config = os.path.join(workdir, "worker.toml")
            database = os.path.join(workdir, "worker.db")
            with open(config, "w") as file:
                file.write(f'[operator]\nbase_url = "{static.base_url}"\n'
                           f'[database]\npath = "{database}"\n'
                           '[mapping]\nbatch_size = 3\nconcurrency = 2\n')
            env = dict(os.environ, UID2_API_KEY=API_KEY, UID2_CLIENT_SECRET=SECRET)
            env.pop("UID2_BUCKET_SYNC_CONFIG", None)
            emails = ["user@example.com", "JANE.SAOIRSE@gmail.com", "optout@example.com",
                      "other@example.com", "x.y+z@gmail.com"]
            phone_numbers = ["+12345678901", "+441234567890"]
            records = "".join(f'{{"id": "e{n}", "email": "{e}"}}\n' for n, e in enumerate(emails))
            records += "".join(f'{{"id": "p{n}", "phone": "{p}"}}\n' for n, p in enumerate(phone_numbers))

            def ours(*args, stdin=None):
                done = subprocess.run([binary, "--config", config, *args], input=stdin,
                                      capture_output=True, text=True, env=env, timeout=60)
                expect(done.returncode == 0, f"{args[0]} failed: {done.stderr.strip()}")
                return done.stdout

            ours("identities", "import", "-", "--format", "jsonl", stdin=records)
            summary = ours("remap")
            expect(summary.startswith("remap: 7 identities sent (v3), 7 changed"), summary)
            sdk = v3_client(static).generate_identity_map(
                IdentityMapV3Input.from_emails(emails).with_phones(phone_numbers))
            exported = {r["id"]: r for r in map(json.loads, ours("identities", "export").splitlines())}
            ids = {f"e{n}": e for n, e in enumerate(emails)}
            ids.update({f"p{n}": p for n, p in enumerate(phone_numbers)})
            for key, identifier in ids.items():
                record = exported[key]
                if identifier in sdk.mapped_identities:
                    identity = sdk.mapped_identities[identifier]
                    expect(record["status"] == "mapped" and record["uid2"] == identity.current_raw_uid,
                           f"{key}: stored UID2 differs from the SDK's")
                    expect(record["previous_uid2"] == identity.previous_raw_uid, f"{key}: p differs")
                    stored_r = dt.datetime.fromisoformat(record["refresh_from"].replace("Z", "+00:00"))
                    expect(stored_r == identity.refresh_from, f"{key}: r {stored_r} vs {identity.refresh_from}")
                else:
                    expect(sdk.unmapped_identities[identifier].raw_reason == "optout"
                           and record["status"] == "optout" and record["uid2"] is None,
                           f"{key}: ours {record['status']}")
            feed = [json.loads(line) for line in ours("changes", "--json").splitlines()]
            expect(sorted(c["id"] for c in feed) == sorted(ids), f"feed: {[c['id'] for c in feed]}")
            expect(all(c["uid2"] == exported[c["id"]]["uid2"] for c in feed), "feed and export differ")

        @check
        def a_wrong_api_key_raises_on_both_map_clients():
            v3_input = IdentityMapV3Input.from_emails(["user@example.com"])
            expect_http_error(401, lambda: v3_client(static, api_key="not-the-key").generate_identity_map(v3_input))
            v2_input = IdentityMapInput.from_emails(["user@example.com"])
            expect_http_error(401, lambda: client(static, api_key="not-the-key").generate_identity_map(v2_input))
            other = base64.b64encode(os.urandom(32)).decode()
            expect_http_error(400, lambda: v3_client(static, secret=other).generate_identity_map(v3_input))

        @check
        def the_same_seed_serves_the_same_ids():
            got, _ = buckets_since(rotating, EPOCH)
            expect(set(got) == set(dump), "the rotating operator serves other ids")

        @check
        def after_a_rotation_only_rotated_buckets_are_returned():
            deadline = time.monotonic() + ROTATION_TIMEOUT_S
            while not rotating.logged_rotations():
                expect(time.monotonic() < deadline, "no rotation logged")
                time.sleep(0.05)
            first_at, first_ids = rotating.logged_rotations()[0]
            expect(len(first_ids) == ROTATE_COUNT, f"first rotation had {len(first_ids)} buckets")

            logged_before = rotating.logged_rotations()
            got, rows = buckets_since(rotating, parse_operator_time(first_at))
            time.sleep(0.5)  # lets a rotation racing the call reach the log
            logged_after = rotating.logged_rotations()

            # Every rotation logged before the call must be there; a later one may be.
            latest = {}
            for at, ids in logged_after:
                for bucket_id in ids:
                    latest.setdefault(bucket_id, set()).add(at)
            required = {i for at, ids in logged_before if at >= first_at for i in ids}
            expect(rows == len(got), "a bucket was reported twice")
            expect(required <= set(got), f"missing rotated buckets: {sorted(required - set(got))}")
            for bucket_id, last_updated in got.items():
                expect(bucket_id in latest, f"{bucket_id} was reported but never rotated")
                expect(last_updated in latest[bucket_id],
                       f"{bucket_id} reported at {last_updated}, rotated at {sorted(latest[bucket_id])}")
                expect(last_updated >= first_at, f"{bucket_id} at {last_updated} precedes {first_at}")

        @check
        def after_a_rotation_mapped_identities_get_a_new_uid_and_keep_the_old_as_previous():
            numbers = phones(1000)
            logged_at_start = len(rotating.logged_rotations())
            before = v3_client(rotating).generate_identity_map(IdentityMapV3Input.from_phones(numbers)).mapped_identities
            buckets = {phone: identity.get_bucket_id() for phone, identity in client(rotating)
                       .generate_identity_map(IdentityMapInput.from_phones(numbers)).mapped_identities.items()}
            expect(set(before) == set(buckets) == set(numbers), "not every phone was mapped")
            time.sleep(0.5)  # lets a rotation racing the calls reach the log
            logged_between = len(rotating.logged_rotations())
            # A bucket rotated while the two calls ran may differ between them: leave it out.
            ambiguous = {i for _, ids in rotating.logged_rotations()[logged_at_start:logged_between] for i in ids}

            ours = set(buckets.values())
            deadline = time.monotonic() + ROTATION_TIMEOUT_S
            while not any(set(ids) & ours for _, ids in rotating.logged_rotations()[logged_between:]):
                expect(time.monotonic() < deadline, "no rotation touched a mapped bucket")
                time.sleep(0.05)
            # Logged before the call: applied before it, so visible in its answer.
            logged_before_call = len(rotating.logged_rotations())
            after = v3_client(rotating).generate_identity_map(IdentityMapV3Input.from_phones(numbers)).mapped_identities
            time.sleep(0.5)
            logged = rotating.logged_rotations()
            rotation_count = {}
            for _, ids in logged[logged_between:logged_before_call]:
                for bucket_id in ids:
                    rotation_count[bucket_id] = rotation_count.get(bucket_id, 0) + 1
            # Logged later: may or may not have reached the answer.
            ambiguous |= {i for _, ids in logged[logged_before_call:] for i in ids}

            changed = unchanged = 0
            for phone in numbers:
                bucket = buckets[phone]
                if bucket in ambiguous:
                    continue
                old, new = before[phone], after[phone]
                if bucket not in rotation_count:
                    expect(new.current_raw_uid == old.current_raw_uid, f"{phone} changed without a rotation")
                    unchanged += 1
                    continue
                expect(new.current_raw_uid != old.current_raw_uid, f"{phone}: same UID2 after its bucket rotated")
                if rotation_count[bucket] == 1:
                    expect(new.previous_raw_uid == old.current_raw_uid, f"{phone}: previous is not the old UID2")
                    changed += 1
                expect(is_future_utc_midnight(new.refresh_from), f"{phone}: refresh_from {new.refresh_from}")
            expect(changed > 0 and unchanged > 0, f"{changed} changed, {unchanged} unchanged")

        @check
        def since_1970_shows_each_bucket_at_its_initial_or_a_rotated_time():
            got, rows = buckets_since(rotating, EPOCH)
            time.sleep(0.5)  # lets a rotation racing the call reach the log
            rotated_at = {}
            for at, ids in rotating.logged_rotations():
                for bucket_id in ids:
                    rotated_at.setdefault(bucket_id, set()).add(at)
            expect(rows == BUCKETS and set(got) == set(dump), f"{rows} rows, other ids")
            for bucket_id, last_updated in got.items():
                allowed = {dump[bucket_id]} | rotated_at.get(bucket_id, set())
                expect(last_updated in allowed,
                       f"{bucket_id} at {last_updated}, expected one of {sorted(allowed)}")
            expect(any(got[k] in rotated_at[k] for k in rotated_at), "no rotation visible")

        passed = failed = 0
        for function in checks:
            try:
                function()
            except Exception as error:  # each check reports, the run goes on
                failed += 1
                print(f"FAIL {function.__name__}: {error}")
                if not isinstance(error, AssertionError):
                    traceback.print_exc()
            else:
                passed += 1
                print(f"ok   {function.__name__}")

        for name, operator in (("static", static), ("rotating", rotating)):
            code = operator.stop()
            if code == 0:
                passed += 1
                print(f"ok   {name}_operator_stops_cleanly_on_sigterm")
            else:
                failed += 1
                print(f"FAIL {name}_operator_stops_cleanly_on_sigterm: exit {code}\n{operator.stderr()}")
        return passed, failed
    finally:
        static.stop()
        if rotating is not None:
            rotating.stop()


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"uid2-client {metadata.version('uid2_client')} against {sys.argv[1]}")
    with tempfile.TemporaryDirectory(prefix="uid2-interop-") as workdir:
        try:
            passed, failed = run_checks(sys.argv[1], workdir)
        except Exception as error:
            traceback.print_exc()
            print(f"interop: could not run: {error}")
            passed, failed = 0, 1
    print(f"interop: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
