// @ts-check
/** An error with a stable `code`: an MRC error code (PROTOCOL.md 2.6), a close reason
 * (2.8), or one of this client's own: `not_connected`, `disconnected`, `timeout`,
 * `closed`, `queue_full`, `duplicate_id`. */
export class MrcError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{ id?: string, frame?: object }} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'MrcError';
    this.code = code;
    /** The request or message id this error answers, when there is one. */
    this.id = extra.id;
    /** The server's `error` frame, when the error came from one. */
    this.frame = extra.frame;
  }
}
