// @ts-check
/** The delay before reconnect attempt `attempt` (0 for the first): "full jitter",
 * uniform in [0, min(maxMs, minMs * 2^attempt)), so that clients dropped together by one
 * gateway do not come back together.
 * @param {number} attempt
 * @param {{ minMs: number, maxMs: number }} range
 * @param {() => number} [random]
 */
export function backoffDelay(attempt, range, random = Math.random) {
  const cap = Math.min(range.maxMs, range.minMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}
