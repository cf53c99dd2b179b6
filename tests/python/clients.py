"""Drives an MRC cluster with clients MRC did not write: `websockets` and `nats-py`.

Usage: python3 tests/python/clients.py WS_URL NATS_URL
Exits 0 when every check passes; raises (exit 1) on the first that does not.
Run by tests/it/python.rs; scripts/setup.sh installs the packages into .tools/py.
"""

import asyncio
import json
import sys

import nats
import websockets


async def recv(ws, op):
    """The next frame, which must have op `op`."""
    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["op"] == op, f"expected {op}, got {frame}"
    return frame


async def main(ws_url, nats_url):
    nc = await nats.connect(nats_url)
    presence = await nc.subscribe("mrc.presence.>")

    async with websockets.connect(ws_url) as alice, websockets.connect(ws_url) as bob:
        await alice.send(json.dumps({"op": "login", "user": "py-alice"}))
        welcome = await recv(alice, "welcome")
        assert welcome["user"] == "py-alice", welcome
        await bob.send(json.dumps({"op": "login", "user": "py bob ü"}))
        await recv(bob, "welcome")

        # Presence events name the user; the subject carries its encoded token.
        seen = {}
        while len(seen) < 2:
            msg = await asyncio.wait_for(presence.next_msg(), 10)
            event = json.loads(msg.data)
            seen[event["user"]] = (event["status"], msg.subject)
        assert seen["py-alice"] == ("online", "mrc.presence.py-alice"), seen
        assert seen["py bob ü"][0] == "online" and seen["py bob ü"][1].startswith("mrc.presence.="), seen

        # A backend request on mrc.send reaches the WebSocket client.
        request = {"to": ["py-alice", "nobody"], "from": "python", "id": "py-1", "body": {"n": [1, 2]}}
        reply = await nc.request("mrc.send", json.dumps(request).encode(), timeout=5)
        report = json.loads(reply.data)
        assert report == {"id": "py-1", "status": {"py-alice": "delivered", "nobody": "offline"}}, report
        msg = await recv(alice, "msg")
        assert (msg["id"], msg["from"], msg["body"]) == ("py-1", "python", {"n": [1, 2]}), msg

        # One WebSocket client to another, with a report.
        await alice.send(json.dumps({"op": "send", "id": "py-2", "to": ["py bob ü"], "body": "hallo"}))
        report = await recv(alice, "report")
        assert report["status"] == {"py bob ü": "delivered"}, report
        msg = await recv(bob, "msg")
        assert (msg["from"], msg["body"], msg["to"]) == ("py-alice", "hallo", ["py bob ü"]), msg

        # Bad input gets a stable error code and the connection stays.
        await alice.send("{not json")
        error = await recv(alice, "error")
        assert error["code"] == "bad_json", error
        await alice.send(json.dumps({"op": "ping", "id": "p"}))
        assert (await recv(alice, "pong"))["id"] == "p"

    await presence.unsubscribe()
    await nc.close()
    print("python clients: all checks passed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
