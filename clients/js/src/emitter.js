// @ts-check
/** A tiny on/off emitter: works the same in browsers and Node, and a throwing listener
 * cannot break the client (its error is rethrown on a fresh task, where it is seen). */
export class Emitter {
  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map();

  /**
   * @param {string} type
   * @param {Function} listener
   * @returns {() => void} a function that removes the listener
   */
  on(type, listener) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => this.off(type, listener);
  }

  /** @param {string} type @param {Function} listener */
  off(type, listener) {
    this.#listeners.get(type)?.delete(listener);
  }

  /** @param {string} type @param {Function} listener */
  once(type, listener) {
    /** @param {unknown} value */
    const wrapper = (value) => {
      this.off(type, wrapper);
      listener(value);
    };
    return this.on(type, wrapper);
  }

  /** @param {string} type @param {unknown} value */
  emit(type, value) {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        listener(value);
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    }
  }
}
