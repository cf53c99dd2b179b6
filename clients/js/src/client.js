// @ts-check
/**
 * MrcClient: a WebSocket client of an MRC gateway, for browsers and Node.
 *
 * It owns one connection at a time and what outlives it: the login, the reconnect
 * schedule, the requests waiting for an answer, the presence subscriptions and the ids of
 * recent messages. It speaks only the client protocol of docs/PROTOCOL.md section 2; it
 * knows nothing of NATS, and it never invents a server op.
 *
 * No dependencies: the WebSocket is the global one (browsers, Node >= 22) or the
 * constructor passed as `options.WebSocket` (the `ws` package on Node 20).
 */

import { backoffDelay } from './backoff.js';
import { Emitter } from './emitter.js';
import { MrcError } from './error.js';
import { RecentIds, randomId } from './ids.js';
import { Acker } from './inbox.js';

/** Close and login-error reasons after which a reconnect would fail again, or would
 * replace the newer session that replaced this one (PROTOCOL.md 2.8, 6.2). */
const TERMINAL = new Set(['unauthorized', 'too_many_sessions', 'replaced', 'bad_id', 'bad_frame']);

/** Request ops whose frame may be sent again, unchanged, after a reconnect: message sends
 * (receivers drop the copy by id, PROTOCOL.md 2.7), reads, and the group ops that the
 * protocol makes idempotent (adding a member twice changes nothing, 4.1). `group_create`
 * and `group_delete` are not: a resend after a lost answer could fail for having worked. */
const REPLAYABLE = new Set([
  'send', 'group_send', 'ping', 'presence', 'presence_subscribe', 'presence_unsubscribe',
  'group_members', 'group_list', 'group_join', 'group_leave', 'group_add', 'group_remove',
  'fetch', 'ack',
]);

/** What answers each request op, besides an `error` with the same id. */
const ANSWER = { send: 'report', group_send: 'report', ping: 'pong' };

const DEFAULTS = {
  reconnect: { minMs: 500, maxMs: 30000 },
  connectTimeoutMs: 10000,
  timeoutMs: 15000,
  pingIntervalMs: 20000,
  offline: /** @type {'queue' | 'reject'} */ ('queue'),
  maxQueued: 1000,
  dedupeSize: 5000,
  autoAck: true,
};

/**
 * @typedef {object} Pending  A request waiting for its answer.
 * @property {Record<string, unknown> & { op: string, id: string }} frame
 * @property {string} answer  the op that answers it (`report`, `result`, `pong`)
 * @property {(value: any) => void} resolve
 * @property {(error: MrcError) => void} reject
 * @property {boolean} sent  written to the current connection
 * @property {ReturnType<typeof setTimeout>} timer
 * @property {number} start  when it was last written (for `ping`'s round trip)
 */

/**
 * @typedef {object} Conn  One WebSocket and what it told us before closing.
 * @property {any} ws
 * @property {string} url
 * @property {string} [reason]  from `bye`, `kicked` or a refused login
 * @property {boolean} terminal  reconnecting would not help
 * @property {MrcError} [loginError]
 * @property {ReturnType<typeof setTimeout>} [timer]  connect + login deadline
 */

export class MrcClient extends Emitter {
  /** `idle` before `connect()`, `connecting` until `welcome` (and between reconnects),
   * `ready` while logged in, `closed` after `close()` or a terminal close. */
  state = /** @type {'idle' | 'connecting' | 'ready' | 'closed'} */ ('idle');
  /** @type {{ user: string, session: string, gateway: string } | undefined} the last welcome */
  welcome = undefined;

  /** @type {string[]} */ #urls;
  /** @type {any} */ #options;
  /** @type {any} */ #WebSocket;
  /** @type {Conn | undefined} the live connection, if any */ #conn;
  #attempt = 0;
  #urlIndex = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #reconnectTimer;
  /** @type {ReturnType<typeof setInterval> | undefined} */ #pingTimer;
  /** Requests by id, in the order they were made (a Map keeps insertion order), so a
   * flush after login sends them in that order. @type {Map<string, Pending>} */
  #pending = new Map();
  /** Users this client watches, with their last known state. @type {Map<string, string>} */
  #watched = new Map();
  /** @type {RecentIds} */ #seen;
  /** @type {{ resolve: Function, reject: Function }[]} */ #waiters = [];
  #welcomed = false;
  #prefix = randomId().slice(0, 8);
  #seq = 0;
  /** Acknowledges stored messages (`seq`), coalesced. */
  #acker = new Acker((seq) => this.request('ack', { seq }));

  /**
   * @param {string | string[]} url  one gateway (`ws://host:8080/ws`) or several, tried in
   *   turn on each reconnect
   * @param {any} options  `MrcClientOptions` in index.d.ts
   */
  constructor(url, options) {
    super();
    this.#urls = Array.isArray(url) ? [...url] : [url];
    if (this.#urls.length === 0) throw new TypeError('mrc-client: no gateway URL');
    if (!options || (options.token == null && options.user == null)) {
      throw new TypeError('mrc-client: give options.token (a JWT) or options.user (dev auth)');
    }
    this.#options = {
      ...DEFAULTS,
      ...options,
      reconnect: { ...DEFAULTS.reconnect, ...options.reconnect },
    };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError(
        'mrc-client: no global WebSocket; pass options.WebSocket (e.g. `ws` on Node 20)',
      );
    }
    this.#seen = new RecentIds(this.#options.dedupeSize);
  }

  // ---- lifecycle -------------------------------------------------------------------

  /** Connects and logs in (again, after `close()` or a terminal close); resolves with the
   * welcome, rejects with an `MrcError` if the login is refused for good or `close()` is
   * called first. Reconnects by itself from then on.
   * @returns {Promise<{ user: string, session: string, gateway: string }>} */
  connect() {
    if (this.state === 'ready' && this.welcome) return Promise.resolve(this.welcome);
    const promise = new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
    if (this.state === 'idle' || this.state === 'closed') {
      this.#attempt = 0;
      this.#open();
    }
    return promise;
  }

  /** Closes the connection and stops reconnecting. Requests not answered yet are rejected
   * with code `closed`. */
  close() {
    clearTimeout(this.#reconnectTimer);
    this.#acker.stop();
    const conn = this.#conn;
    if (conn) {
      conn.terminal = true;
      conn.reason = 'closed';
      this.#drop(conn, 1000, 'closed');
    } else if (this.state !== 'closed') {
      this.#finish(new MrcError('closed', 'closed by the client'), 1000, 'closed');
    }
  }

  #open() {
    this.state = 'connecting';
    const url = this.#urls[this.#urlIndex % this.#urls.length];
    /** @type {Conn} */
    const conn = { ws: null, url, terminal: false };
    try {
      conn.ws = new this.#WebSocket(url);
    } catch (error) {
      // A malformed URL: no retry can fix it.
      this.#conn = undefined;
      const reason = String(/** @type {Error} */ (error)?.message ?? error);
      this.#finish(new MrcError('bad_url', reason), 0, reason);
      return;
    }
    this.#conn = conn;
    const current = () => this.#conn === conn;
    conn.ws.onopen = () => current() && this.#login(conn);
    conn.ws.onmessage = (/** @type {{ data: unknown }} */ event) => {
      if (current() && typeof event.data === 'string') this.#frame(conn, event.data);
    };
    conn.ws.onclose = (/** @type {{ code: number, reason: string }} */ event) => {
      if (current()) this.#closed(conn, event.code, event.reason);
    };
    conn.ws.onerror = () => {}; // a close event follows
    conn.timer = setTimeout(() => {
      if (current()) this.#drop(conn, 4000, 'connect_timeout');
    }, this.#options.connectTimeoutMs);
  }

  /** @param {Conn} conn */
  async #login(conn) {
    this.emit('open', { url: conn.url });
    /** @type {Record<string, string>} */
    const frame = { op: 'login' };
    try {
      const { token, user, device } = this.#options;
      const value = typeof token === 'function' ? await token() : token;
      if (value != null) frame.token = value;
      if (user != null) frame.user = user;
      if (device != null) frame.device = device;
    } catch (error) {
      if (this.#conn !== conn) return;
      this.emit('error', new MrcError('token', `getting a token failed: ${error}`));
      this.#drop(conn, 4000, 'token');
      return;
    }
    if (this.#conn === conn) this.#write(conn, frame);
  }

  /** Ends `conn` from this side: forgets its socket at once, then closes it.
   * @param {Conn} conn @param {number} code @param {string} reason */
  #drop(conn, code, reason) {
    this.#closed(conn, code, reason);
    try {
      conn.ws.close(1000, reason);
    } catch {
      // already closing
    }
  }

  /** @param {Conn} conn @param {number} code @param {string} closeReason */
  #closed(conn, code, closeReason) {
    clearTimeout(conn.timer);
    clearInterval(this.#pingTimer);
    this.#conn = undefined;
    const reason = conn.reason ?? (closeReason || 'disconnected');
    const terminal = conn.terminal || TERMINAL.has(closeReason);
    const replay = !terminal && this.#options.offline === 'queue';
    for (const [id, pending] of this.#pending) {
      if (!pending.sent) continue;
      if (replay && REPLAYABLE.has(pending.frame.op)) {
        pending.sent = false;
      } else if (!terminal) {
        const message = `connection lost (${reason}); the request may or may not have been done`;
        this.#settle(id, null, new MrcError('disconnected', message, { id }));
      }
    }
    if (terminal) {
      const error = conn.loginError ?? new MrcError(reason, `connection closed: ${reason}`);
      this.#finish(error, code, reason);
      return;
    }
    const delayMs = backoffDelay(this.#attempt++, this.#options.reconnect);
    this.#urlIndex++;
    this.state = 'connecting';
    this.emit('close', { code, reason, willReconnect: true, delayMs });
    this.#reconnectTimer = setTimeout(() => this.#open(), delayMs);
  }

  /** The end: no reconnect until `connect()` is called again.
   * @param {MrcError} error @param {number} code @param {string} reason */
  #finish(error, code, reason) {
    this.state = 'closed';
    this.#acker.stop();
    for (const id of [...this.#pending.keys()]) {
      this.#settle(id, null, new MrcError(error.code, error.message, { id }));
    }
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
    this.emit('close', { code, reason, willReconnect: false });
  }

  // ---- frames from the gateway ------------------------------------------------------

  /** @param {Conn} conn @param {string} text */
  #frame(conn, text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return; // the gateway sends JSON only
    }
    if (!frame || typeof frame !== 'object') return;
    this.emit('frame', frame);
    switch (frame.op) {
      case 'welcome':
        return this.#onWelcome(conn, frame);
      case 'msg':
        return this.#onMessage(frame);
      case 'report':
      case 'pong':
        return this.#answer(frame.op, frame.id, frame);
      case 'result':
        return this.#answer('result', frame.id, frame.result);
      case 'presence':
        if (this.#watched.has(frame.user)) this.#watched.set(frame.user, frame.state);
        this.emit('presence', frame);
        return;
      case 'error':
        return this.#onError(conn, frame);
      case 'bye':
        conn.reason = frame.reason;
        conn.terminal ||= TERMINAL.has(frame.reason);
        return;
      case 'kicked':
        conn.reason = frame.reason ?? 'replaced';
        conn.terminal = true;
        this.emit('kicked', { reason: conn.reason });
        return;
      default:
      // A frame of a newer gateway: seen only through the `frame` event.
    }
  }

  /** A message, once per id; one from the inbox (`seq`) is acknowledged after the
   * `message` listeners ran (with `autoAck`), and a copy of one already seen is
   * acknowledged in any case: the app had the first.
   * @param {any} frame */
  #onMessage(frame) {
    const first = !this.#seen.seen(`${frame.from ?? ''}\u0000${frame.id}`);
    if (first) this.emit('message', frame);
    if (typeof frame.seq === 'number' && (this.#options.autoAck || !first)) {
      this.#acker.ack(frame.seq);
    }
  }

  /** @param {Conn} conn @param {any} frame */
  #onWelcome(conn, frame) {
    clearTimeout(conn.timer);
    this.state = 'ready';
    this.#attempt = 0;
    this.welcome = { user: frame.user, session: frame.session, gateway: frame.gateway };
    const reconnected = this.#welcomed;
    this.#welcomed = true;
    // What waited for the login goes first, in the order it was asked.
    for (const pending of this.#pending.values()) {
      if (!pending.sent) this.#transmit(conn, pending);
    }
    if (reconnected && this.#watched.size > 0) this.#resubscribe();
    this.#startPings(conn);
    for (const waiter of this.#waiters.splice(0)) waiter.resolve(this.welcome);
    this.emit('welcome', { ...this.welcome, reconnected });
  }

  /** @param {Conn} conn @param {any} frame */
  #onError(conn, frame) {
    const error = new MrcError(frame.code, frame.message, { id: frame.id, frame });
    if (frame.id != null && this.#pending.has(frame.id)) {
      this.#settle(frame.id, null, error);
      return;
    }
    if (this.state === 'connecting') {
      // The answer to `login` (which carries no id).
      conn.loginError = error;
      this.emit('error', error);
      if (TERMINAL.has(frame.code)) {
        conn.reason = frame.code;
        conn.terminal = true;
        // `unauthorized` and `too_many_sessions` are followed by `bye` and a close;
        // after a bad id or frame the gateway waits for another login: leave.
        if (frame.code === 'bad_id' || frame.code === 'bad_frame') {
          this.#drop(conn, 1000, frame.code);
        }
      }
      return;
    }
    this.emit('error', error);
  }

  // ---- requests ---------------------------------------------------------------------

  /**
   * Sends any request op and resolves with its answer: the `result` object, the whole
   * `report` frame, or for `ping` the round trip in milliseconds. The typed helpers below
   * are built on it: a new op needs no change here (see "Extending" in README.md).
   * @param {string} op
   * @param {Record<string, unknown>} [fields]
   * @param {{ id?: string, timeoutMs?: number }} [options]
   * @returns {Promise<any>}
   */
  request(op, fields = {}, options = {}) {
    const id = options.id ?? fields.id ?? `${this.#prefix}.${++this.#seq}`;
    const frame = { ...fields, op, id: String(id) };
    /** @param {string} code @param {string} message */
    const fail = (code, message) => Promise.reject(new MrcError(code, message, { id: frame.id }));
    const waiting = this.state !== 'ready';
    if (this.state === 'closed') return fail('closed', 'the client is closed');
    if (waiting && this.#options.offline === 'reject') return fail('not_connected', 'offline');
    if (this.#pending.has(frame.id)) return fail('duplicate_id', `${frame.id} is pending already`);
    if (waiting && this.#queued() >= this.#options.maxQueued) {
      return fail('queue_full', 'too many requests wait for a connection');
    }
    return new Promise((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.#options.timeoutMs;
      /** @type {Pending} */
      const pending = {
        frame,
        answer: ANSWER[/** @type {keyof ANSWER} */ (op)] ?? 'result',
        resolve,
        reject,
        sent: false,
        start: 0,
        timer: setTimeout(() => {
          const message = `no answer to ${op} within ${timeoutMs} ms`;
          this.#settle(frame.id, null, new MrcError('timeout', message, { id: frame.id }));
        }, timeoutMs),
      };
      this.#pending.set(frame.id, pending);
      const conn = this.#conn;
      if (this.state === 'ready' && conn) this.#transmit(conn, pending);
    });
  }

  #queued() {
    let n = 0;
    for (const pending of this.#pending.values()) if (!pending.sent) n++;
    return n;
  }

  /** @param {Conn} conn @param {Pending} pending */
  #transmit(conn, pending) {
    pending.sent = true;
    pending.start = Date.now();
    this.#write(conn, pending.frame);
  }

  /** @param {Conn} conn @param {object} frame */
  #write(conn, frame) {
    try {
      conn.ws.send(JSON.stringify(frame));
    } catch {
      // The socket is closing: its close event decides what becomes of the request.
    }
  }

  /** @param {string} op @param {unknown} id @param {any} value */
  #answer(op, id, value) {
    if (typeof id !== 'string') return;
    if (this.#pending.get(id)?.answer === op) this.#settle(id, value, null);
  }

  /** @param {string} id @param {any} value @param {MrcError | null} error */
  #settle(id, value, error) {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(pending.answer === 'pong' ? Date.now() - pending.start : value);
  }

  /** @param {Conn} conn */
  #startPings(conn) {
    const every = this.#options.pingIntervalMs;
    if (!every) return;
    this.#pingTimer = setInterval(() => {
      this.ping({ timeoutMs: every }).catch((error) => {
        // No pong in a whole interval: the connection is dead but does not know it yet.
        if (error.code === 'timeout' && this.#conn === conn) this.#drop(conn, 4000, 'ping_timeout');
      });
    }, every);
  }

  // ---- messages ---------------------------------------------------------------------

  /**
   * Sends `body` (any JSON value) to one user or several; resolves with the report,
   * whose `status` maps each receiver to `delivered`, `offline`, `stored`, `inbox_full`,
   * `rejected` or `unavailable`. Resend after `unavailable` or a `timeout` with the same
   * `id`. `offline: 'store'` keeps it for receivers not online; `durable: true` stores
   * it for every receiver until acknowledged (PROTOCOL.md 8).
   * @param {string | string[]} to
   * @param {unknown} body
   * @param {{ id?: string, timeoutMs?: number, offline?: 'store' | 'drop', durable?: boolean }} [options]
   */
  send(to, body, options = {}) {
    const receivers = Array.isArray(to) ? to : [to];
    const { offline, durable, ...rest } = options;
    const id = options.id ?? randomId();
    /** @type {Record<string, unknown>} */
    const fields = { to: receivers, body: body ?? null };
    if (offline !== undefined) fields.offline = offline;
    if (durable) fields.durable = true;
    return this.request('send', fields, { ...rest, id });
  }

  // ---- the inbox ---------------------------------------------------------------------

  /** This user's stored messages after `since` (oldest first, at most `limit`, 100).
   * @param {{ since?: number, limit?: number, timeoutMs?: number }} [options] */
  fetch(options = {}) {
    const { since, limit, ...rest } = options;
    /** @type {Record<string, unknown>} */
    const fields = {};
    if (since !== undefined) fields.since = since;
    if (limit !== undefined) fields.limit = limit;
    return this.request('fetch', fields, rest);
  }

  /** Acknowledges (removes) every stored message up to `seq`; with `autoAck` (the
   * default) the client does this itself after the `message` listeners ran.
   * @param {number} seq @param {{ timeoutMs?: number }} [options] */
  ack(seq, options) {
    return this.request('ack', { seq }, options);
  }

  /** Sends `body` to every member of `group` but this user; resolves with the report.
   * @param {string} group
   * @param {unknown} body
   * @param {{ id?: string, timeoutMs?: number }} [options] */
  groupSend(group, body, options = {}) {
    const id = options.id ?? randomId();
    return this.request('group_send', { group, body: body ?? null }, { ...options, id });
  }

  /** Round trip to the gateway, in milliseconds.
   * @param {{ timeoutMs?: number }} [options] @returns {Promise<number>} */
  ping(options = {}) {
    return this.request('ping', {}, options);
  }

  // ---- groups (PROTOCOL.md 4.2) -----------------------------------------------------

  /** Creates `group` owned by this user, with `members` added at once and a `policy`.
   * @param {string} group
   * @param {{ members?: string[], policy?: object, timeoutMs?: number }} [options] */
  groupCreate(group, options = {}) {
    const { members, policy, ...rest } = options;
    return this.request(
      'group_create',
      { group, ...(members && { members }), ...(policy && { policy }) },
      rest,
    );
  }

  /** @param {string} group @param {{ timeoutMs?: number }} [options] */
  groupDelete(group, options) {
    return this.request('group_delete', { group }, options);
  }

  /** @param {string} group @param {{ timeoutMs?: number }} [options] */
  groupJoin(group, options) {
    return this.request('group_join', { group }, options);
  }

  /** @param {string} group @param {{ timeoutMs?: number }} [options] */
  groupLeave(group, options) {
    return this.request('group_leave', { group }, options);
  }

  /** @param {string} group @param {string[]} members @param {{ timeoutMs?: number }} [options] */
  groupAdd(group, members, options) {
    return this.request('group_add', { group, members }, options);
  }

  /** @param {string} group @param {string[]} members @param {{ timeoutMs?: number }} [options] */
  groupRemove(group, members, options) {
    return this.request('group_remove', { group, members }, options);
  }

  /** @param {string} group @param {{ timeoutMs?: number }} [options] */
  groupMembers(group, options) {
    return this.request('group_members', { group }, options);
  }

  /** @param {{ timeoutMs?: number }} [options] */
  groupList(options) {
    return this.request('group_list', {}, options);
  }

  // ---- presence (PROTOCOL.md 5) -----------------------------------------------------

  /** Who of `users` is online now.
   * @param {string[]} users @param {{ timeoutMs?: number }} [options] */
  presence(users, options) {
    return this.request('presence', { users }, options);
  }

  /** Watches `users`: a `presence` event whenever one comes online or goes offline. The
   * client subscribes again after each reconnect (a new session starts with none) and
   * then emits a `presence` event, with `resync: true`, for each change it missed.
   * @param {string[]} users @param {{ timeoutMs?: number }} [options] */
  async subscribePresence(users, options) {
    const result = await this.request('presence_subscribe', { users }, options);
    this.#remember(users, result);
    return result;
  }

  /** @param {string[]} users @param {{ timeoutMs?: number }} [options] */
  unsubscribePresence(users, options) {
    for (const user of users) this.#watched.delete(user);
    return this.request('presence_unsubscribe', { users }, options);
  }

  /** @param {string[]} users @param {any} result */
  #remember(users, result) {
    const refused = new Set(result?.refused ?? []);
    for (const user of users) {
      if (!refused.has(user)) this.#watched.set(user, stateOf(result, user));
    }
  }

  #resubscribe() {
    const users = [...this.#watched.keys()];
    this.request('presence_subscribe', { users }).then(
      (result) => {
        for (const user of users) {
          if (!this.#watched.has(user)) continue; // unsubscribed meanwhile
          const state = stateOf(result, user);
          if (this.#watched.get(user) === state) continue;
          this.#watched.set(user, state);
          this.emit('presence', { op: 'presence', user, state, ts: Date.now(), resync: true });
        }
      },
      (error) => this.emit('error', error),
    );
  }
}

/** A user's state in a presence result. @param {any} result @param {string} user */
function stateOf(result, user) {
  return result?.users?.[user]?.online ? 'online' : 'offline';
}
