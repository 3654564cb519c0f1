"""The comparison point for `bench fire` and `bench fire-replay`: what the Python
original's approach to POST /api/cron/fire costs when it does the same work as
hermes-gateway — verify the fire JWT with PyJWT against pinned public keys (RS/ES
algorithms only, exp+aud required, aud, 30 s leeway, purpose == cron_fire), refuse a
replayed jti, claim the job's slot with a compare-and-swap plus a unique run row, answer
202. It does not run the turn afterwards (the gateway does).

STATE says where the replay table and the claims live:
- `sqlite` (the default): in one SQLite transaction (WAL, synchronous=NORMAL, as the
  gateway), as durable as the gateway's;
- `memory`: in this process's dicts, the way the Python original keeps them (lost on a
  restart, not shared by replicas), so the comparison is the hardest one.

    python3 bench/fire_receiver.py PORT DB N SLOT RSA_PUB EC_PUB AUDIENCE [STATE]
"""
import json
import sqlite3
import sys
import time
import uuid

import jwt
from aiohttp import web

port, db_path, n, slot = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rsa_pub, ec_pub, audience = open(sys.argv[5]).read(), open(sys.argv[6]).read(), sys.argv[7]
state = sys.argv[8] if len(sys.argv) > 8 else "sqlite"
KEYS = {"RS256": rsa_pub, "RS384": rsa_pub, "RS512": rsa_pub, "ES256": ec_pub, "ES384": ec_pub}

db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.executescript(
    """
    CREATE TABLE jobs (id TEXT PRIMARY KEY, enabled INTEGER NOT NULL, state TEXT NOT NULL,
                       next_run_at INTEGER);
    CREATE TABLE runs (id TEXT PRIMARY KEY, job_id TEXT NOT NULL, scheduled_for INTEGER NOT NULL,
                       started_at INTEGER NOT NULL, status TEXT NOT NULL,
                       UNIQUE (job_id, scheduled_for));
    CREATE TABLE fire_tokens (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
    """
)
db.execute("BEGIN")
db.executemany(
    "INSERT INTO jobs VALUES (?, 1, 'scheduled', ?)", ((f"{i:012x}", slot) for i in range(n))
)
db.execute("COMMIT")


def verify(token):
    try:
        alg = jwt.get_unverified_header(token).get("alg")
        key = KEYS.get(alg)
        if key is None:
            return None
        claims = jwt.decode(
            token, key, algorithms=[alg], audience=audience, leeway=30,
            options={"require": ["exp", "aud"]},
        )
    except Exception:
        return None
    return claims if claims.get("purpose") == "cron_fire" else None


# The in-memory state (STATE=memory): job -> its slot, claimed (job, slot)s, jti -> expiry.
mem_jobs = {f"{i:012x}": slot for i in range(n)}
mem_runs = set()
mem_tokens = {}
mem_swept = [0]


def claim_in_memory(job_id, jti, exp, now):
    """The same steps as the SQLite claim, on dicts (one thread: no lock needed)."""
    if jti:
        if now - mem_swept[0] >= 10:
            for k in [k for k, until in mem_tokens.items() if until < now]:
                del mem_tokens[k]
            mem_swept[0] = now
        if jti in mem_tokens:
            return "duplicate", None
        mem_tokens[jti] = int(exp) + 30
    at = mem_jobs.get(job_id, -1)
    if at == -1:
        return "unknown_job", None
    if at is None or (job_id, at) in mem_runs:
        return "duplicate", None
    mem_jobs[job_id] = None
    mem_runs.add((job_id, at))
    return "started", "run_" + uuid.uuid4().hex[:16]


async def fire(request):
    auth = request.headers.get("Authorization", "")
    claims = verify(auth[7:]) if auth.lower().startswith("bearer ") else None
    if claims is None:
        return web.json_response({"error": "invalid fire token"}, status=401)
    try:
        body = await request.json()
    except Exception:
        body = None
    job_id = body.get("job_id") if isinstance(body, dict) else None
    if not job_id:
        return web.json_response({"error": "missing job_id"}, status=400)
    now = int(time.time())
    jti = claims.get("jti")
    if state == "memory":
        outcome, run_id = claim_in_memory(job_id, jti, claims["exp"], now)
        return web.json_response(
            {"status": "accepted", "job_id": job_id, "run_id": run_id, "outcome": outcome}, status=202
        )
    if jti:
        db.execute("DELETE FROM fire_tokens WHERE expires_at < ?", (now,))
        cur = db.execute(
            "INSERT INTO fire_tokens VALUES (?, ?) ON CONFLICT (jti) DO NOTHING",
            (jti, int(claims["exp"]) + 30),
        )
        if cur.rowcount != 1:
            return web.json_response({"status": "accepted", "job_id": job_id, "outcome": "duplicate"}, status=202)
    row = db.execute("SELECT next_run_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return web.json_response({"status": "accepted", "job_id": job_id, "outcome": "unknown_job"}, status=202)
    run_id = "run_" + uuid.uuid4().hex[:16]
    db.execute("BEGIN IMMEDIATE")
    moved = db.execute(
        "UPDATE jobs SET next_run_at = NULL WHERE id = ? AND next_run_at = ? AND enabled = 1 AND state = 'scheduled'",
        (job_id, row[0]),
    ).rowcount
    opened = moved and db.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, 'running') ON CONFLICT (job_id, scheduled_for) DO NOTHING",
        (run_id, job_id, row[0], now),
    ).rowcount
    if opened:
        db.execute("COMMIT")
        outcome = "started"
    else:
        db.execute("ROLLBACK")
        outcome, run_id = "duplicate", None
    return web.json_response(
        {"status": "accepted", "job_id": job_id, "run_id": run_id, "outcome": outcome}, status=202
    )


async def health(_request):
    return web.json_response({"status": "ok"})


app = web.Application()
app.router.add_post("/api/cron/fire", fire)
app.router.add_get("/api/status", health)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
