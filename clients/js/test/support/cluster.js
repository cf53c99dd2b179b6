// What the cluster tests share: the addresses of the real cluster that
// tests/it/js_client.rs starts (passed in MRC_* variables), clients on it, and waiting.
//
// The cluster: one center with `--login-policy device`; gateways g0 and g1 for every
// test, g2 and g3 for the tests that stop them (MRC_PID_2, MRC_PID_3); all with
// `--insecure-dev-auth`, `--jwt-secret $MRC_JWT_SECRET` and `--api-key $MRC_API_KEY`.

import { createHmac } from 'node:crypto';

import WebSocket from 'ws';

import { MrcClient, randomId } from '../../src/index.js';

const env = process.env;

/** `false` when the cluster is there, else why the test is skipped (`node --test` run by
 * hand: the Rust test is the one that starts a cluster). */
export const skip = env.MRC_WS_0
  ? false
  : 'no cluster: run `cargo test --test it js_client`, which starts one';

/** WebSocket URLs of g0..g3. */
export const ws = [env.MRC_WS_0, env.MRC_WS_1, env.MRC_WS_2, env.MRC_WS_3];
/** Process ids of g2 and g3, for the tests that stop them. */
export const pid = { 2: Number(env.MRC_PID_2), 3: Number(env.MRC_PID_3) };
/** `http://127.0.0.1:PORT` of g0. */
export const http = env.MRC_HTTP_0;

/** A user id no other test uses. */
export function uid(name) {
  return `${name}-${randomId().slice(0, 8)}`;
}

/** A client with test-speed reconnects (not connected yet). */
export function client(url, options) {
  return new MrcClient(url, {
    WebSocket,
    reconnect: { minMs: 50, maxMs: 500 },
    ...options,
  });
}

/** A client logged in as `user` (dev auth). */
export async function connected(url, user, options = {}) {
  const c = client(url, { user, ...options });
  await c.connect();
  return c;
}

/** Records every `type` event of `c`; `until(match)` waits for one that matches. */
export function record(c, type) {
  const events = [];
  const waiters = new Set();
  c.on(type, (event) => {
    events.push(event);
    for (const waiter of waiters) waiter(event);
  });
  return {
    events,
    until(match = () => true, timeoutMs = 10000) {
      const found = events.find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`no ${type} event matched within ${timeoutMs} ms: ${match}`));
        }, timeoutMs);
        const waiter = (event) => {
          if (!match(event)) return;
          clearTimeout(timer);
          waiters.delete(waiter);
          resolve(event);
        };
        waiters.add(waiter);
      });
    },
  };
}

/** An HS256 JWT for `sub`, valid for a minute, signed with `secret`. */
export function jwt(sub, secret = env.MRC_JWT_SECRET) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, exp: now + 60 })}`;
  const signature = createHmac('sha256', secret).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

/** A backend send through g0's HTTP API (`POST /v1/messages` with the API key). */
export async function backendSend(request) {
  const response = await fetch(`${http}/v1/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${env.MRC_API_KEY}` },
    body: JSON.stringify(request),
  });
  if (!response.ok) throw new Error(`POST /v1/messages: ${response.status} ${await response.text()}`);
  return response.json();
}

/** Resolves after `ms` (only to show that something did NOT happen). */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
