"""An outside client for `bench tickets`: the round trip a browser or a harness makes, with
the standard Python stack (http.client keep-alive for the mint, `websockets` for the
socket): POST /api/auth/ws-ticket with the session cookie, open /api/events?ticket=, read
the first frame, close (sending Close and waiting for the server's Close and the end of
the connection, as `websockets` does). Sequential, for SECONDS; prints one line:

    ROUND_TRIPS_PER_S MINT_P50_MS OPEN_P50_MS FIRST_FRAME_P50_MS CLOSE_P50_MS

    python3 bench/ws_ticket_client.py PORT COOKIE SECONDS
"""
import http.client
import json
import sys
import time

from websockets.sync.client import connect


def main():
    port, cookie, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    mint = http.client.HTTPConnection("127.0.0.1", port)
    phases = ([], [], [], [])
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        mint.request("POST", "/api/auth/ws-ticket", headers={"cookie": cookie})
        ticket = json.loads(mint.getresponse().read())["ticket"]
        t1 = time.perf_counter()
        ws = connect(f"ws://127.0.0.1:{port}/api/events?ticket={ticket}")
        t2 = time.perf_counter()
        first = ws.recv()
        assert '"status"' in first, first
        t3 = time.perf_counter()
        ws.close()
        t4 = time.perf_counter()
        for phase, (a, b) in zip(phases, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
            phase.append((b - a) * 1000)
        n += 1
    p50 = [sorted(p)[len(p) // 2] for p in phases]
    print(f"{n / seconds:.1f} " + " ".join(f"{v:.3f}" for v in p50))


if __name__ == "__main__":
    main()
