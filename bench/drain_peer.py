"""The comparison point for `bench drain-latency`: the Python original's drain watch — an
aiohttp API server whose background task checks the drain marker once a second and, while
it exists (and parses), answers chat turns 503 `gateway_draining`; otherwise an echo 200.

    python3 bench/drain_peer.py PORT MARKER_PATH
"""
import asyncio
import json
import sys

from aiohttp import web

POLL_SECONDS = 1.0
state = {"draining": False}


def marker_says_drain(path):
    try:
        with open(path) as f:
            return json.load(f).get("action") == "drain"
    except (OSError, ValueError):
        return False


async def watch(path):
    while True:
        state["draining"] = marker_says_drain(path)
        await asyncio.sleep(POLL_SECONDS)


async def chat(request):
    body = await request.json()
    if state["draining"]:
        return web.json_response(
            {"error": {"code": "gateway_draining", "message": "draining"}}, status=503
        )
    text = body["messages"][-1]["content"]
    return web.json_response(
        {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
         "message": {"role": "assistant", "content": text}}]}
    )


async def health(_request):
    return web.json_response({"status": "ok"})


async def start(app):
    app["watch"] = asyncio.create_task(watch(app["marker"]))


def main():
    port, marker = int(sys.argv[1]), sys.argv[2]
    app = web.Application()
    app["marker"] = marker
    app.on_startup.append(start)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
