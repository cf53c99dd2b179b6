// @ts-check
/**
 * mrc-client: the JavaScript client of MRC (docs/PROTOCOL.md section 2), for browsers and
 * Node, with no dependencies. Types: index.d.ts beside this file.
 *
 *   client.js   MrcClient: connection, login, reconnect, requests, presence, inbox
 *   inbox.js    Acker: coalesced acknowledgements of stored messages
 *   error.js    MrcError, the error every rejected promise carries
 *   ids.js      randomId (message ids) and RecentIds (duplicate drop)
 *   backoff.js  the reconnect delay (full jitter)
 *   emitter.js  the on/off event emitter
 */

export { MrcClient } from './client.js';
export { MrcError } from './error.js';
export { RecentIds, randomId } from './ids.js';
export { backoffDelay } from './backoff.js';
