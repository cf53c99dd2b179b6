// Groups through the client against a real cluster (PROTOCOL.md 4).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { connected, record, skip, uid, ws } from './support/cluster.js';

test('a group is created, sent to, read and deleted', { skip }, async () => {
  const [a, b, c] = [uid('alice'), uid('bob'), uid('carol')];
  const team = uid('team');
  const alice = await connected(ws[0], a);
  const bob = await connected(ws[1], b);
  try {
    const created = await alice.groupCreate(team, { members: [b, c] });
    assert.deepEqual(created, {
      group: team,
      owner: a,
      policy: { join: 'invite', manage: 'owner', send: 'members', visibility: 'private' },
      size: 3,
    });

    const inbox = record(bob, 'message');
    const report = await alice.groupSend(team, { text: 'hi team' });
    assert.equal(report.group, team);
    assert.deepEqual(report.counts, { delivered: 1, offline: 1 });
    assert.deepEqual(report.status, { [b]: 'delivered', [c]: 'offline' });
    const msg = await inbox.until((m) => m.id === report.id);
    assert.deepEqual([msg.group, msg.from, msg.to], [team, a, undefined]);

    assert.deepEqual((await bob.groupMembers(team)).members, [a, b, c].sort());
    assert.deepEqual(await bob.groupList(), { groups: [team], user: b });
    await assert.rejects(alice.groupCreate(team), { code: 'group_exists' });
    await assert.rejects(bob.groupAdd(team, [uid('dave')]), { code: 'forbidden' });
    await assert.rejects(bob.groupSend(uid('no-such-group'), 1), { code: 'not_found' });

    assert.equal((await alice.groupRemove(team, [c])).size, 2);
    assert.equal((await bob.groupLeave(team)).size, 1);
    assert.equal((await alice.groupDelete(team)).deleted, true);
  } finally {
    alice.close();
    bob.close();
  }
});

test('anyone joins an open group and receives its messages', { skip }, async () => {
  const [a, b] = [uid('alice'), uid('bob')];
  const room = uid('room');
  const alice = await connected(ws[0], a);
  const bob = await connected(ws[1], b);
  try {
    await alice.groupCreate(room, { policy: { join: 'open', visibility: 'public' } });
    assert.equal((await bob.groupJoin(room)).size, 2);
    const inbox = record(bob, 'message');
    const { id } = await alice.groupSend(room, 'welcome, bob');
    assert.equal((await inbox.until((m) => m.id === id)).body, 'welcome, bob');
  } finally {
    alice.close();
    bob.close();
  }
});
