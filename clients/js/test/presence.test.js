// Presence queries and subscriptions through the client (PROTOCOL.md 5).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { connected, record, skip, uid, ws } from './support/cluster.js';

test('a subscriber sees a user come online and go offline', { skip }, async () => {
  const [a, b] = [uid('alice'), uid('bob')];
  const alice = await connected(ws[0], a);
  try {
    const events = record(alice, 'presence');
    const subscribed = await alice.subscribePresence([b]);
    assert.deepEqual(subscribed.users[b], { online: false, sessions: 0 });

    const bob = await connected(ws[1], b);
    const online = await events.until((p) => p.user === b && p.state === 'online');
    assert.equal(typeof online.ts, 'number');
    const now = await alice.presence([b]);
    assert.equal(now.users[b].online, true);
    assert.equal(now.users[b].sessions, 1);

    bob.close();
    await events.until((p) => p.user === b && p.state === 'offline');

    assert.deepEqual(await alice.unsubscribePresence([b]), { unsubscribed: [b] });
    const inbox = record(alice, 'message');
    const again = await connected(ws[1], b);
    const { id } = await again.send(a, 'after unsubscribing');
    await inbox.until((m) => m.id === id);
    again.close();
    assert.deepEqual(
      events.events.map((p) => p.state),
      ['online', 'offline'],
      'no event after unsubscribing',
    );
  } finally {
    alice.close();
  }
});
