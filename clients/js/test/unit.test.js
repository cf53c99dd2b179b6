// The client's seams against a scripted fake WebSocket: what it writes, how it matches
// answers, drops duplicates, queues, reconnects and gives up. No network.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MrcClient, MrcError, RecentIds, backoffDelay } from '../src/index.js';

/** A WebSocket constructor whose instances the test drives by hand. */
function fakeWebSocket() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closed = null;
      sockets.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      this.closed = { code, reason };
    }
    // What the gateway would do:
    open() {
      this.onopen?.({});
    }
    receive(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }
    drop(code = 1006, reason = '') {
      this.onclose?.({ code, reason });
    }
    ops() {
      return this.sent.map((f) => f.op);
    }
  }
  return { FakeSocket, sockets };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

/** Waits until `check()` is truthy (the client's timers and promises run meanwhile). */
async function until(check, what = 'condition') {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await tick();
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** A client over a fake socket, opened and logged in as `user`. */
async function ready(options = {}, user = 'alice') {
  const { FakeSocket, sockets } = fakeWebSocket();
  const client = new MrcClient(options.urls ?? 'ws://gw/ws', {
    user,
    WebSocket: FakeSocket,
    reconnect: { minMs: 1, maxMs: 1 },
    pingIntervalMs: 0,
    ...options,
  });
  const welcome = client.connect();
  const ws = sockets[0];
  ws.open();
  await until(() => ws.sent.length === 1, 'login');
  ws.receive({ op: 'welcome', user, session: 's1', gateway: 'gw-1' });
  await welcome;
  return { client, sockets, ws };
}

test('logs in with the dev user id, or with a token asked for before each login', async () => {
  const dev = await ready();
  assert.deepEqual(dev.ws.sent[0], { op: 'login', user: 'alice' });
  dev.client.close();

  let calls = 0;
  const { client, sockets } = await ready({ user: undefined, token: async () => `t${++calls}` });
  assert.deepEqual(sockets[0].sent[0], { op: 'login', token: 't1' });
  sockets[0].drop();
  await until(() => sockets.length === 2, 'a reconnect');
  sockets[1].open();
  await until(() => sockets[1].sent.length === 1, 'the second login');
  assert.deepEqual(sockets[1].sent[0], { op: 'login', token: 't2' });
  client.close();
});

test('a report settles the send with the same id, whatever the order', async () => {
  const { client, ws } = await ready();
  const first = client.send('bob', { text: 'one' }, { id: 'm1' });
  const second = client.send(['bob', 'carol'], 'two', { id: 'm2' });
  assert.deepEqual(ws.sent.slice(1), [
    { op: 'send', to: ['bob'], body: { text: 'one' }, id: 'm1' },
    { op: 'send', to: ['bob', 'carol'], body: 'two', id: 'm2' },
  ]);
  ws.receive({ op: 'report', id: 'm2', status: { bob: 'delivered', carol: 'offline' } });
  ws.receive({ op: 'report', id: 'unknown', status: {} });
  ws.receive({ op: 'report', id: 'm1', status: { bob: 'delivered' } });
  assert.deepEqual((await second).status, { bob: 'delivered', carol: 'offline' });
  assert.deepEqual((await first).status, { bob: 'delivered' });
  client.close();
});

test('an error frame with the id rejects that request with its code', async () => {
  const { client, ws } = await ready();
  const members = client.groupMembers('nope');
  const { id } = ws.sent.at(-1);
  ws.receive({ op: 'error', code: 'not_found', message: 'no group nope', id });
  await assert.rejects(members, (error) => {
    assert.ok(error instanceof MrcError);
    assert.equal(error.code, 'not_found');
    assert.equal(error.id, id);
    return true;
  });
  client.close();
});

test('a message seen already (same sender and id) is dropped', async () => {
  const { client, ws } = await ready();
  const got = [];
  client.on('message', (m) => got.push(`${m.from}/${m.id}`));
  const msg = { op: 'msg', id: 'x1', from: 'bob', to: ['alice'], ts: 1, body: 1 };
  ws.receive(msg);
  ws.receive(msg);
  ws.receive({ ...msg, from: 'carol' });
  ws.receive({ ...msg, id: 'x2' });
  ws.receive(msg);
  assert.deepEqual(got, ['bob/x1', 'carol/x1', 'bob/x2']);
  client.close();
});

test('recent ids are bounded and forget the least recently seen first', () => {
  const recent = new RecentIds(2);
  assert.equal(recent.seen('a'), false);
  assert.equal(recent.seen('b'), false);
  assert.equal(recent.seen('a'), true); // a is now the most recent
  assert.equal(recent.seen('c'), false); // forgets b
  assert.equal(recent.keys.size, 2);
  assert.equal(recent.seen('a'), true);
  assert.equal(recent.seen('b'), false);
});

test('backoff is full jitter under an exponential cap', () => {
  const range = { minMs: 100, maxMs: 1000 };
  assert.equal(backoffDelay(0, range, () => 0), 0);
  assert.equal(backoffDelay(0, range, () => 0.999), 99);
  assert.equal(backoffDelay(3, range, () => 0.5), 400);
  assert.equal(backoffDelay(10, range, () => 0.999), 999);
  assert.equal(backoffDelay(5000, range, () => 0.5), 500);
  for (let i = 0; i < 100; i++) {
    const delay = backoffDelay(2, range);
    assert.ok(delay >= 0 && delay < 400, `${delay}`);
  }
});

test('requests made before the login wait for it and go out in order', async () => {
  const { FakeSocket, sockets } = fakeWebSocket();
  const client = new MrcClient('ws://gw/ws', { user: 'alice', WebSocket: FakeSocket });
  const sent = client.send('bob', 1, { id: 'q1' });
  const list = client.groupList();
  client.connect();
  sockets[0].open();
  await until(() => sockets[0].sent.length === 1, 'login');
  assert.deepEqual(sockets[0].ops(), ['login']);
  sockets[0].receive({ op: 'welcome', user: 'alice', session: 's', gateway: 'g' });
  assert.deepEqual(sockets[0].ops(), ['login', 'send', 'group_list']);
  sockets[0].receive({ op: 'report', id: 'q1', status: { bob: 'offline' } });
  assert.equal((await sent).status.bob, 'offline');
  client.close();
  await assert.rejects(list, { code: 'closed' });
});

test('with offline: reject, a request while disconnected fails at once', async () => {
  const { client, ws } = await ready({ offline: 'reject' });
  const inFlight = client.send('bob', 1);
  ws.drop();
  await assert.rejects(inFlight, { code: 'disconnected' });
  await assert.rejects(client.send('bob', 2), { code: 'not_connected' });
  client.close();
});

test('after a drop it reconnects, logs in again and replays what may be replayed', async () => {
  const { client, sockets, ws } = await ready({ urls: ['ws://a/ws', 'ws://b/ws'] });
  const closes = [];
  const welcomes = [];
  client.on('close', (c) => closes.push(c));
  client.on('welcome', (w) => welcomes.push(w));
  const sent = client.send('bob', 'hi', { id: 'r1' });
  const created = client.groupCreate('team');
  ws.receive({ op: 'bye', reason: 'shutdown' });
  ws.drop(1001, 'shutdown');
  await assert.rejects(created, { code: 'disconnected' });
  assert.equal(closes[0].reason, 'shutdown');
  assert.equal(closes[0].willReconnect, true);
  await until(() => sockets.length === 2, 'a reconnect');
  assert.equal(sockets[1].url, 'ws://b/ws', 'the next gateway of the list');
  sockets[1].open();
  await until(() => sockets[1].sent.length === 1, 'the login');
  sockets[1].receive({ op: 'welcome', user: 'alice', session: 's2', gateway: 'gw-2' });
  assert.deepEqual(sockets[1].sent[1], { op: 'send', to: ['bob'], body: 'hi', id: 'r1' });
  assert.equal(welcomes[0].reconnected, true);
  sockets[1].receive({ op: 'report', id: 'r1', status: { bob: 'delivered' } });
  assert.equal((await sent).status.bob, 'delivered');
  client.close();
});

test('kicked: no reconnect, pending requests fail with the reason', async () => {
  const { client, sockets, ws } = await ready();
  const events = [];
  client.on('kicked', (k) => events.push(['kicked', k.reason]));
  client.on('close', (c) => events.push(['close', c.reason, c.willReconnect]));
  const sent = client.send('bob', 1);
  ws.receive({ op: 'kicked', reason: 'replaced' });
  ws.drop(1008, 'replaced');
  await assert.rejects(sent, { code: 'replaced' });
  assert.deepEqual(events, [
    ['kicked', 'replaced'],
    ['close', 'replaced', false],
  ]);
  await tick();
  assert.equal(sockets.length, 1);
  assert.equal(client.state, 'closed');
  await assert.rejects(client.send('bob', 2), { code: 'closed' });
});

test('a refused login rejects connect() and is not retried', async () => {
  const { FakeSocket, sockets } = fakeWebSocket();
  const client = new MrcClient('ws://gw/ws', {
    token: 'forged',
    WebSocket: FakeSocket,
    reconnect: { minMs: 1, maxMs: 1 },
  });
  const connecting = client.connect();
  sockets[0].open();
  await until(() => sockets[0].sent.length === 1, 'login');
  sockets[0].receive({ op: 'error', code: 'unauthorized', message: 'bad token' });
  sockets[0].receive({ op: 'bye', reason: 'unauthorized' });
  sockets[0].drop(1008, 'unauthorized');
  await assert.rejects(connecting, { code: 'unauthorized' });
  await tick();
  assert.equal(sockets.length, 1);
});

test('a request without an answer times out', async () => {
  const { client } = await ready();
  await assert.rejects(client.presence(['bob'], { timeoutMs: 20 }), { code: 'timeout' });
  client.close();
});

test('a dead connection (no pong) is closed and replaced', async () => {
  const { client, sockets } = await ready({ pingIntervalMs: 20 });
  await until(() => sockets[0].ops().includes('ping'), 'a ping');
  await until(() => sockets.length === 2, 'a reconnect after the missing pong');
  assert.ok(sockets[0].closed, 'the dead socket was closed');
  client.close();
});

test('presence subscriptions are renewed after a reconnect, with missed changes', async () => {
  const { client, sockets, ws } = await ready();
  const events = [];
  client.on('presence', (p) => events.push(`${p.user}:${p.state}${p.resync ? ':resync' : ''}`));
  const subscribed = client.subscribePresence(['bob', 'carol']);
  const { id } = ws.sent.at(-1);
  const offline = { online: false, sessions: 0 };
  ws.receive({ op: 'result', id, result: { users: { bob: offline, carol: offline } } });
  await subscribed;
  ws.receive({ op: 'presence', user: 'bob', state: 'online', ts: 5 });
  ws.drop();
  await until(() => sockets.length === 2, 'a reconnect');
  sockets[1].open();
  await until(() => sockets[1].sent.length === 1, 'the login');
  sockets[1].receive({ op: 'welcome', user: 'alice', session: 's2', gateway: 'g' });
  const resubscribe = sockets[1].sent[1];
  assert.deepEqual([resubscribe.op, resubscribe.users], ['presence_subscribe', ['bob', 'carol']]);
  const online = { online: true, sessions: 1, since: 9 };
  sockets[1].receive({
    op: 'result',
    id: resubscribe.id,
    result: { users: { bob: online, carol: online } },
  });
  await tick();
  assert.deepEqual(events, ['bob:online', 'carol:online:resync']);
  client.close();
});

test('inbox messages are acknowledged once, coalesced, copies included', async () => {
  const { client, ws } = await ready();
  const got = [];
  client.on('message', (m) => got.push(m.seq));
  const msg = (id, seq) => ({ op: 'msg', id, from: 'bob', to: ['alice'], ts: 1, body: 1, seq });
  ws.receive(msg('a', 3));
  ws.receive(msg('b', 5));
  ws.receive(msg('a', 3)); // a copy: dropped, and needs no second ack
  await until(() => ws.ops().includes('ack'), 'an ack');
  const acks = () => ws.sent.filter((f) => f.op === 'ack');
  assert.deepEqual(acks().map((f) => f.seq), [5]);
  assert.deepEqual(got, [3, 5]);
  // A failed ack is sent again.
  ws.receive({ op: 'error', code: 'unavailable', message: 'inbox', id: acks()[0].id });
  await until(() => acks().length === 2, 'the ack again');
  assert.equal(acks()[1].seq, 5);
  client.close();
});

test('without autoAck only copies of seen messages are acknowledged by the client', async () => {
  const { client, ws } = await ready({ autoAck: false });
  const msg = { op: 'msg', id: 'a', from: 'bob', to: ['alice'], ts: 1, body: 1, seq: 7 };
  ws.receive(msg);
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.ok(!ws.ops().includes('ack'), 'the app acks what it processed');
  ws.receive({ ...msg, seq: 9 });
  await until(() => ws.ops().includes('ack'), 'the copy acknowledged');
  assert.equal(ws.sent.find((f) => f.op === 'ack').seq, 9);
  client.close();
});
