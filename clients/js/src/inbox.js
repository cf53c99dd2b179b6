// @ts-check
/**
 * Acknowledgements of stored messages (PROTOCOL.md 8): a message pushed from the inbox
 * carries `seq`, and stays in the inbox until an `ack` up to its `seq`. One `ack` covers
 * every message before it, so acks are coalesced: the highest `seq` to acknowledge is
 * kept and sent once after a short delay, and again later if that `ack` failed (the
 * gateway pushes at most 64 unacknowledged messages, so a lost ack would stall the inbox).
 */

export class Acker {
  /** The highest `seq` asked for, and the highest the gateway confirmed. */
  #wanted = 0;
  #confirmed = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #timer;
  /** @type {(seq: number) => Promise<unknown>} */ #send;
  #delayMs;
  #retryMs;
  /** The client was closed: a failed ack is not tried again. */
  #stopped = false;

  /**
   * @param {(seq: number) => Promise<unknown>} send  sends `{"op":"ack","seq":seq}`
   * @param {{ delayMs?: number, retryMs?: number }} [timing]
   */
  constructor(send, timing = {}) {
    this.#send = send;
    this.#delayMs = timing.delayMs ?? 20;
    this.#retryMs = timing.retryMs ?? 1000;
  }

  /** Acknowledges every stored message up to `seq`, soon. @param {number} seq */
  ack(seq) {
    if (!(seq > this.#wanted)) return;
    this.#wanted = seq;
    this.#stopped = false;
    this.#schedule(this.#delayMs);
  }

  /** Stops a scheduled ack (the client is closed). */
  stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** @param {number} delayMs */
  #schedule(delayMs) {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => this.#flush(), delayMs);
  }

  #flush() {
    this.#timer = undefined;
    const seq = this.#wanted;
    if (seq <= this.#confirmed) return;
    this.#send(seq).then(
      () => {
        this.#confirmed = Math.max(this.#confirmed, seq);
      },
      () => {
        if (!this.#stopped) this.#schedule(this.#retryMs);
      },
    );
  }
}
