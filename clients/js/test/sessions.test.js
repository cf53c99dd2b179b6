// Connections that end: a newer login kicks (no reconnect), a gateway that stops or
// crashes (reconnect to the next gateway, log in again, carry on). Gateways g2 and g3 are
// stopped here; no other test file uses them.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { connected, pid, record, skip, sleep, uid, ws } from './support/cluster.js';

test('a newer login of the same user kicks the older client for good', { skip }, async () => {
  const user = uid('erin');
  // The center runs `--login-policy device`: logins without a device form one class.
  const old = await connected(ws[0], user);
  const kicked = record(old, 'kicked');
  const closes = record(old, 'close');
  const opens = record(old, 'open');
  const newer = await connected(ws[1], user);
  const peer = await connected(ws[0], uid('frank'));
  try {
    assert.equal((await kicked.until()).reason, 'replaced');
    const close = await closes.until();
    assert.deepEqual([close.reason, close.willReconnect], ['replaced', false]);
    assert.equal(old.state, 'closed');
    await assert.rejects(old.send(user, 'x'), { code: 'closed' });
    await sleep(300);
    assert.equal(opens.events.length, 0, 'a kicked client does not reconnect');

    const inbox = record(newer, 'message');
    const report = await peer.send(user, 'to the newer session');
    assert.deepEqual(report.status, { [user]: 'delivered' });
    await inbox.until((m) => m.id === report.id);
  } finally {
    old.close();
    newer.close();
    peer.close();
  }
});

/** A client on gateway `gone` (with `next` as its other URL) that loses it by `signal`,
 * then reconnects to `next`, logs in again and gets and sends messages again. */
async function survives(gone, next, signal) {
  const user = uid(`survivor-${signal}`);
  const c = await connected([ws[gone], ws[next]], user);
  const peerId = uid('peer');
  const peer = await connected(ws[next], peerId);
  const closes = record(c, 'close');
  const welcomes = record(c, 'welcome');
  const inbox = record(c, 'message');
  const peerInbox = record(peer, 'message');
  try {
    assert.equal(c.welcome.gateway, `g${gone}`);
    const watcher = uid('watched');
    await c.subscribePresence([watcher]);
    const presence = record(c, 'presence');

    process.kill(pid[gone], signal);
    const close = await closes.until();
    assert.equal(close.willReconnect, true);
    // Sent while disconnected: waits for the new login, then goes out.
    const queued = c.send(peerId, 'sent while away');
    const welcome = await welcomes.until();
    assert.equal(welcome.reconnected, true);
    assert.equal(welcome.gateway, `g${next}`);
    assert.deepEqual((await queued).status, { [peerId]: 'delivered' });
    await peerInbox.until((m) => m.body === 'sent while away');

    const back = await peer.send(user, 'found you');
    assert.deepEqual(back.status, { [user]: 'delivered' });
    await inbox.until((m) => m.id === back.id);

    // The presence subscription was renewed on the new session.
    const watched = await connected(ws[0], watcher);
    await presence.until((p) => p.user === watcher && p.state === 'online');
    watched.close();
    return close;
  } finally {
    c.close();
    peer.close();
  }
}

test('after its gateway shuts down, the client reconnects to another', { skip }, async () => {
  const close = await survives(2, 0, 'SIGTERM');
  // A graceful stop says why: `bye` `shutdown`, close 1001.
  assert.deepEqual([close.reason, close.code], ['shutdown', 1001]);
});

test('after its gateway crashes, the client reconnects to another', { skip }, async () => {
  const close = await survives(3, 1, 'SIGKILL');
  assert.equal(close.code, 1006, 'no close frame from a killed process');
});
