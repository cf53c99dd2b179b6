#!/usr/bin/env python3
"""What one NATS message and one request-reply cost nats-server at a given rate.

The floor under MRC's CPU per message at low rates: a routed 1:1 message is at least one
NATS message between gateways. Starts its own nats-server (the one scripts/setup.sh
installed), sends open loop at each rate (one-way publish, then request-reply with the
responder on a second connection, 128-byte payloads) and prints nats-server's CPU per
message from /proc.

    scripts/nats-floor.py [RATE ...]        # default: 2000 10000
"""
import asyncio
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".tools", "py"))
import nats  # noqa: E402  (installed by scripts/setup.sh into .tools/py)

SECONDS = 8
BODY = b"x" * 128


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def paced(rate, send):
    """Calls send() `rate` times a second for SECONDS; returns how many."""
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < SECONDS:
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send()
        n += 1
    return n


async def measure(url, pid, rate):
    requester, responder = await nats.connect(url), await nats.connect(url)

    async def echo(msg):
        if msg.reply:
            await responder.publish(msg.reply, msg.data)

    await responder.subscribe("floor.>", cb=echo)
    await responder.flush()
    for kind in ("publish", "request-reply"):
        pending = set()

        async def send():
            if kind == "publish":
                await requester.publish("floor.pub", BODY)
            else:
                pending.add(asyncio.ensure_future(requester.request("floor.req", BODY, timeout=5)))

        before, started = cpu_seconds(pid), time.perf_counter()
        n = await paced(rate, send)
        if pending:
            await asyncio.gather(*pending)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - before
        print(f"{rate:>6}/s {kind:<13} nats-server {100 * cpu / elapsed:3.0f}% of a core"
              f" = {1e6 * cpu / n:4.0f} µs per {'message' if kind == 'publish' else 'round trip'}")
    await requester.close()
    await responder.close()


def main():
    rates = [int(r) for r in sys.argv[1:]] or [2000, 10000]
    server = os.environ.get("MRC_NATS_SERVER", os.path.join(ROOT, ".tools", "nats", "bin", "nats-server"))
    with tempfile.TemporaryDirectory() as store:
        proc = subprocess.Popen([server, "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", store],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            url = None
            for line in proc.stderr:  # a free port: read it off the server's log
                if "Listening for client connections on" in line:
                    url = "nats://" + line.rsplit(" ", 1)[1].strip()
                    break
            if url is None:
                sys.exit("nats-server did not start")
            for rate in rates:
                asyncio.run(measure(url, proc.pid, rate))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
