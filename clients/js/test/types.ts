// Compiled, never run (npm run typecheck): index.d.ts must describe the client as a
// TypeScript user would write against it.

import { MrcClient, MrcError, type Message, type Outcome, type Report } from '../src/index.js';

async function example(): Promise<void> {
  const client = new MrcClient(['ws://127.0.0.1:8080/ws', 'ws://127.0.0.1:8081/ws'], {
    token: async () => 'jwt',
    device: 'web',
    reconnect: { minMs: 250 },
    offline: 'reject',
  });
  const off = client.on('message', (m: Message) => {
    const text: string = m.group ? `${m.group}: ${m.from}` : `${m.from} → ${m.to?.join(',')}`;
    console.log(text, m.body);
  });
  client.on('presence', (p) => console.log(p.user, p.state === 'online', p.resync));
  client.on('close', (c) => c.willReconnect && console.log(c.delayMs));
  client.on('kicked', ({ reason }) => console.log(reason));
  client.on('error', (e) => console.log(e.code, e.id));
  const welcome = await client.connect();
  console.log(welcome.user, welcome.session, client.state === 'ready');

  const report: Report = await client.send(['bob'], { text: 'hi', n: [1, 2] }, { id: 'm-1' });
  const outcome: Outcome | undefined = report.status?.bob;
  const group = await client.groupCreate('team', { members: ['bob'], policy: { join: 'open' } });
  const size: number = group.size;
  const members: string[] | undefined = (await client.groupMembers('team')).members;
  const groups: string[] = (await client.groupList()).groups;
  const counts = (await client.groupSend('team', 'hello')).counts?.delivered;
  const stored = await client.send('carol', 'later', { offline: 'store', durable: false });
  const kept: boolean = stored.status?.carol === 'stored' || stored.status?.carol === 'inbox_full';
  const page = await client.fetch({ since: 0, limit: 10 });
  const last: number | undefined = page.messages.at(-1)?.seq;
  if (last !== undefined && page.more) console.log((await client.ack(last)).removed, kept);
  client.on('message', (m) => m.seq !== undefined && client.ack(m.seq));
  const online: boolean = (await client.presence(['bob'])).users.bob.online;
  await client.subscribePresence(['bob']);
  const unsubscribed: string[] = (await client.unsubscribePresence(['bob'])).unsubscribed;
  const rtt: number = await client.ping({ timeoutMs: 1000 });
  const acked = await client.request<{ acked: number }>('ack', { ids: ['m-1'] });
  console.log(outcome, size, members, groups, counts, online, unsubscribed, rtt, acked.acked);
  try {
    await client.groupDelete('team');
  } catch (error) {
    if (error instanceof MrcError && error.code === 'forbidden') console.log(error.message);
  }
  off();
  client.close();
}

// @ts-expect-error `reconnect` is an object of delays
new MrcClient('ws://x/ws', { user: 'a', reconnect: 1 });
// @ts-expect-error no such event
new MrcClient('ws://x/ws', { user: 'a' }).on('msg', () => {});

void example;
