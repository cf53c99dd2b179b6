// The durable inbox through the client, on a real cluster (PROTOCOL.md 8): stored for a
// user who is not online, pushed at login with `seq`, acknowledged by the client, and
// pushed again to a client that did not acknowledge.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { client, connected, record, skip, uid, ws } from './support/cluster.js';

/** A client of `user` on `url` whose messages are recorded from before its login (the
 * inbox is pushed right after the welcome). */
async function listening(url, user, options = {}) {
  const c = client(url, { user, ...options });
  const messages = record(c, 'message');
  await c.connect();
  return { c, messages };
}

/** Waits until `user`'s inbox (read by `reader`) holds `n` messages. */
async function inboxHolds(reader, n) {
  for (let i = 0; i < 100; i++) {
    const page = await reader.fetch();
    if (page.messages.length === n) return page;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.fail(`the inbox never held ${n} messages`);
}

test('a stored message is pushed at login and acknowledged by the client', { skip }, async () => {
  const [a, b] = [uid('alice'), uid('bob')];
  const alice = await connected(ws[0], a);
  try {
    const report = await alice.send(b, { text: 'later' }, { offline: 'store' });
    assert.deepEqual(report.status, { [b]: 'stored' });
    const { c: bob, messages } = await listening(ws[1], b);
    try {
      const msg = await messages.until((m) => m.id === report.id);
      assert.equal(typeof msg.seq, 'number');
      assert.deepEqual(msg.body, { text: 'later' });
      await inboxHolds(bob, 0);
    } finally {
      bob.close();
    }
  } finally {
    alice.close();
  }
});

test('a durable message not acknowledged comes again at the next login', { skip }, async () => {
  const [a, b] = [uid('alice'), uid('bob')];
  const alice = await connected(ws[0], a);
  const { c: bob, messages: toBob } = await listening(ws[1], b, { autoAck: false });
  try {
    const report = await alice.send(b, 'keep me', { durable: true, id: uid('d') });
    assert.deepEqual(report.status, { [b]: 'stored' });
    const first = await toBob.until((m) => m.id === report.id);
    bob.close();

    const { c: again, messages } = await listening(ws[0], b, { autoAck: false });
    try {
      const second = await messages.until((m) => m.id === report.id);
      assert.equal(second.seq, first.seq);
      const page = await again.fetch({ since: 0, limit: 10 });
      assert.deepEqual(page.messages.map((m) => m.id), [report.id]);
      assert.equal((await again.ack(second.seq)).removed, 1);
      await inboxHolds(again, 0);
    } finally {
      again.close();
    }
  } finally {
    alice.close();
    bob.close();
  }
});
