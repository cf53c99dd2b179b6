// @ts-check
/** Message ids: the ones this client makes, and the ones it has seen. */

/** A bounded set of recently seen keys; the oldest is forgotten first (an LRU: a key seen
 * again moves to the back). */
export class RecentIds {
  /** @param {number} capacity */
  constructor(capacity) {
    this.capacity = Math.max(1, capacity);
    /** @type {Map<string, true>} insertion order is recency order */
    this.keys = new Map();
  }

  /** True if `key` was seen already; records it either way.
   * @param {string} key */
  seen(key) {
    const known = this.keys.delete(key);
    this.keys.set(key, true);
    if (this.keys.size > this.capacity) {
      this.keys.delete(/** @type {string} */ (this.keys.keys().next().value));
    }
    return known;
  }
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** A random 22-character id (132 bits), the size of the gateway's own message ids. */
export function randomId() {
  const bytes = new Uint8Array(22);
  globalThis.crypto.getRandomValues(bytes);
  let id = '';
  for (const b of bytes) id += ALPHABET[b & 63];
  return id;
}
