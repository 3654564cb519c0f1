"""The comparison point for `bench tickets`: the Python original's approach to WebSocket
tickets — FastAPI, an in-memory dict guarded by a lock, `secrets.token_urlsafe(32)` values,
30 s TTL — with the same endpoints the gateway serves: `POST /api/auth/ws-ticket` (behind a
session cookie) and `/api/events?ticket=` (redeem once, send the status, stay open).

    python3 bench/ws_ticket_server.py PORT
"""
import secrets
import sys
import threading
import time

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

TTL_SECONDS = 30
SESSION = "bench-session"
_tickets = {}
_lock = threading.Lock()
app = FastAPI()


@app.post("/api/auth/ws-ticket")
async def mint(request: Request):
    if request.cookies.get("hermes_session") != SESSION:
        return JSONResponse({"error": "unauthenticated"}, status_code=401)
    ticket = secrets.token_urlsafe(32)
    with _lock:
        _tickets[ticket] = {"user_id": "admin", "expires_at": time.time() + TTL_SECONDS}
    return {"ticket": ticket, "ttl_seconds": TTL_SECONDS}


@app.get("/api/status")
async def status():
    return {"gateway_state": "running"}


@app.websocket("/api/events")
async def events(ws: WebSocket):
    ticket = ws.query_params.get("ticket", "")
    with _lock:
        info = _tickets.pop(ticket, None)
    if info is None or info["expires_at"] < time.time():
        await ws.close(code=4401)
        return
    await ws.accept()
    await ws.send_json({"type": "status", "status": {"gateway_state": "running", "active_agents": 0}})
    try:
        while True:
            await ws.receive_text()
    except Exception:
        pass


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", ws="auto")
