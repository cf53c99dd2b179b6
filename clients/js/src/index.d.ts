// Types of mrc-client, written by hand to match index.js; test/types.ts checks them
// (npm run typecheck). The frames are those of docs/PROTOCOL.md section 2.

/** A receiver's outcome in a report (PROTOCOL.md 2.5). */
export type Outcome =
  | 'delivered'
  | 'offline'
  | 'stored'
  | 'inbox_full'
  | 'rejected'
  | 'unavailable';

/** Any JSON value: a message body is carried unchanged. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface Welcome {
  user: string;
  session: string;
  gateway: string;
}

/** A message for this user: direct (`to`), to a group (`group`) or a broadcast. */
export interface Message {
  op: 'msg';
  id: string;
  /** Absent when a backend gave no sender. */
  from?: string;
  /** When the sender's gateway accepted it, in ms since the epoch. */
  ts: number;
  body: Json;
  /** Every valid receiver of a direct message. */
  to?: string[];
  /** The group of a group message. */
  group?: string;
  broadcast?: true;
  /** Set on a message pushed from the inbox (PROTOCOL.md 8): its sequence number there. */
  seq?: number;
}

/** One stored message, as `fetch` returns it. */
export interface StoredMessage {
  seq: number;
  id: string;
  from?: string;
  to?: string[];
  ts: number;
  body: Json;
}

export interface FetchResult {
  user: string;
  messages: StoredMessage[];
  /** The limit cut the page: fetch again after the last `seq`. */
  more: boolean;
}

export interface AckResult {
  user: string;
  acked: number;
  removed: number;
}

/** What became of a `send` or `groupSend`, per receiver. */
export interface Report {
  op: 'report';
  id: string;
  /** Receiver → outcome; for a group of more than 100 members, absent. */
  status?: Record<string, Outcome>;
  /** Group messages only. */
  group?: string;
  /** Group messages only: how many members got each outcome. */
  counts?: Partial<Record<Outcome, number>>;
}

export interface PresenceEvent {
  op: 'presence';
  user: string;
  state: 'online' | 'offline';
  ts: number;
  /** Set on the events the client makes after a reconnect for changes it missed. */
  resync?: true;
}

export interface UserPresence {
  online: boolean;
  sessions: number;
  since?: number;
}

export interface PresenceResult {
  users: Record<string, UserPresence>;
  /** Users the presence policy hides (or invalid ids). */
  refused?: string[];
}

export type Who = 'owner' | 'members' | 'anyone';

export interface GroupPolicy {
  send?: Who;
  manage?: Who;
  join?: 'open' | 'invite';
  visibility?: 'public' | 'private';
}

/** A group after an op (PROTOCOL.md 4.3). */
export interface GroupResult {
  group: string;
  owner: string;
  policy: Required<GroupPolicy>;
  size: number;
  /** `groupMembers` only. */
  members?: string[];
  /** `groupDelete` only. */
  deleted?: true;
}

export interface GroupList {
  user: string;
  groups: string[];
}

export interface CloseInfo {
  /** The WebSocket close code (1006: the connection was lost, 4000: ended by the client). */
  code: number;
  /** The gateway's `bye` or `kicked` reason, a refused login's code, or the close reason:
   * `shutdown`, `replaced`, `unauthorized`, `idle`, `ping_timeout`, `closed`... */
  reason: string;
  willReconnect: boolean;
  /** When `willReconnect`: the delay before the next attempt. */
  delayMs?: number;
}

export interface MrcEvents {
  /** The WebSocket is open; the login is on its way. */
  open: { url: string };
  /** Logged in; `reconnected` is true for every login after the first. */
  welcome: Welcome & { reconnected: boolean };
  message: Message;
  presence: PresenceEvent;
  /** A newer login of this user replaced this session; no reconnect follows. */
  kicked: { reason: string };
  close: CloseInfo;
  /** A refused login, or an `error` frame that answers no request. */
  error: MrcError;
  /** Every frame from the gateway, as parsed (also those of ops newer than this client). */
  frame: { op: string; [key: string]: unknown };
}

/** The WebSocket constructor: the browser's, Node 22's, or the `ws` package's. */
export type WebSocketConstructor = new (url: string) => {
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
};

export interface MrcClientOptions {
  /** A JWT, sent in the `login` frame (browsers cannot set `Authorization` on a
   * WebSocket), or a function asked for one before each login, e.g. to refresh it. */
  token?: string | (() => string | Promise<string>);
  /** The user id, for gateways started with `--insecure-dev-auth` (development only). */
  user?: string;
  /** The device class, for the `device` login policy (`[A-Za-z0-9_-]{1,64}`). */
  device?: string;
  /** Needed where there is no global WebSocket (Node 20: `import WebSocket from 'ws'`). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect delays: full jitter in [0, min(maxMs, minMs · 2^attempt)). Default 500, 30000. */
  reconnect?: { minMs?: number; maxMs?: number };
  /** Connect and log in within this, or try again (default 10000). */
  connectTimeoutMs?: number;
  /** Default time a request waits for its answer (default 15000). */
  timeoutMs?: number;
  /** A `ping` this often while logged in; no `pong` within it closes the connection and
   * reconnects (default 20000; 0: none). */
  pingIntervalMs?: number;
  /** Requests made while not logged in: wait for the login (`queue`, default) or fail at
   * once with code `not_connected` (`reject`). */
  offline?: 'queue' | 'reject';
  /** Most requests waiting for a login; more fail with `queue_full` (default 1000). */
  maxQueued?: number;
  /** How many recent message ids are remembered to drop duplicates (default 5000). */
  dedupeSize?: number;
  /** Acknowledge messages from the inbox (`seq`) once the `message` listeners ran
   * (default true). With false, call `ack(seq)` when a message is safely processed;
   * copies of messages already seen are acknowledged by the client in either case. */
  autoAck?: boolean;
}

export interface RequestOptions {
  timeoutMs?: number;
}

export interface SendOptions extends RequestOptions {
  /** The message id (generated when absent). Reuse it to resend after `unavailable`. */
  id?: string;
  /** For receivers not online: keep it in their inbox (`stored`) or drop it (`offline`).
   * Default: the gateway's `--offline`. Direct sends only. */
  offline?: 'store' | 'drop';
  /** Acknowledged delivery: stored for every receiver until they acknowledge it. */
  durable?: boolean;
}

/** Codes: MRC's error codes (PROTOCOL.md 2.6: `forbidden`, `not_found`, `too_large`...),
 * close reasons (`replaced`, `unauthorized`...), and this client's own: `not_connected`,
 * `disconnected`, `timeout`, `closed`, `queue_full`, `duplicate_id`, `bad_url`, `token`. */
export class MrcError extends Error {
  constructor(code: string, message: string, extra?: { id?: string; frame?: object });
  readonly code: string;
  /** The id of the request (or message) the error answers. */
  readonly id?: string;
  /** The gateway's `error` frame, when the error is one. */
  readonly frame?: object;
}

export class MrcClient {
  constructor(url: string | string[], options: MrcClientOptions);

  readonly state: 'idle' | 'connecting' | 'ready' | 'closed';
  /** The latest welcome (user, session, gateway), once logged in. */
  readonly welcome: Welcome | undefined;

  connect(): Promise<Welcome>;
  close(): void;

  on<K extends keyof MrcEvents>(type: K, listener: (event: MrcEvents[K]) => void): () => void;
  once<K extends keyof MrcEvents>(type: K, listener: (event: MrcEvents[K]) => void): () => void;
  off<K extends keyof MrcEvents>(type: K, listener: (event: MrcEvents[K]) => void): void;

  send(to: string | string[], body: Json, options?: SendOptions): Promise<Report>;
  groupSend(group: string, body: Json, options?: SendOptions): Promise<Report>;
  /** The round trip in milliseconds. */
  ping(options?: RequestOptions): Promise<number>;

  groupCreate(
    group: string,
    options?: RequestOptions & { members?: string[]; policy?: GroupPolicy },
  ): Promise<GroupResult>;
  groupDelete(group: string, options?: RequestOptions): Promise<GroupResult>;
  groupJoin(group: string, options?: RequestOptions): Promise<GroupResult>;
  groupLeave(group: string, options?: RequestOptions): Promise<GroupResult>;
  groupAdd(group: string, members: string[], options?: RequestOptions): Promise<GroupResult>;
  groupRemove(group: string, members: string[], options?: RequestOptions): Promise<GroupResult>;
  groupMembers(group: string, options?: RequestOptions): Promise<GroupResult>;
  groupList(options?: RequestOptions): Promise<GroupList>;

  presence(users: string[], options?: RequestOptions): Promise<PresenceResult>;
  subscribePresence(users: string[], options?: RequestOptions): Promise<PresenceResult>;
  unsubscribePresence(
    users: string[],
    options?: RequestOptions,
  ): Promise<{ unsubscribed: string[] }>;

  /** This user's stored messages after `since`, oldest first (at most `limit`, 100). */
  fetch(options?: RequestOptions & { since?: number; limit?: number }): Promise<FetchResult>;
  /** Removes every stored message up to `seq` (done by the client with `autoAck`). */
  ack(seq: number, options?: RequestOptions): Promise<AckResult>;

  /** Any request op: resolves with its `result` (a `report` for sends). The extension
   * point for ops newer than this client. */
  request<T = unknown>(
    op: string,
    fields?: Record<string, unknown>,
    options?: RequestOptions & { id?: string },
  ): Promise<T>;
}

/** A bounded set of recent ids (least recently seen forgotten first). */
export class RecentIds {
  constructor(capacity: number);
  readonly capacity: number;
  /** True if `key` was seen already; records it either way. */
  seen(key: string): boolean;
}

/** The full-jitter delay before reconnect attempt `attempt` (0-based). */
export function backoffDelay(
  attempt: number,
  range: { minMs: number; maxMs: number },
  random?: () => number,
): number;

/** A random 22-character id. */
export function randomId(): string;
