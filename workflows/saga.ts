import { CancellationScope } from '@temporalio/workflow';

/**
 * A saga's compensations (DESIGN §1): each step registers its compensation before it
 * runs, so a step that committed but whose reply was lost (it timed out, its worker
 * died) is still undone; on failure or cancellation they run last first.
 *
 * Every compensation must be idempotent and a no-op if its step never committed: it
 * may run for a step that did nothing. One that found nothing to undo may resolve
 * `false`, and is then left out of the names `compensate` returns.
 */
export class Saga {
  readonly #registered: Array<{ name: string; undo: () => Promise<unknown> }> = [];

  /** Registers the compensation of the step about to run (call it before the step). */
  add(name: string, undo: () => Promise<unknown>): void {
    this.#registered.push({ name, undo });
  }

  /**
   * Runs the registered compensations in reverse, each to its end before the next,
   * in a scope a cancellation cannot reach, and returns the names of those that undid
   * something. Each runs once: compensating again runs nothing. A compensation that
   * fails stops the rest and fails the call (they are retried until they commit).
   *
   * `shielded: false` runs them in the caller's scope instead, for a saga whose
   * recorded runs did so (a cancellation then reaches them): shielding them there
   * would change the commands those runs replay.
   */
  compensate({ shielded = true }: { shielded?: boolean } = {}): Promise<string[]> {
    const undoAll = async () => {
      const undone: string[] = [];
      for (let c = this.#registered.pop(); c; c = this.#registered.pop()) {
        if ((await c.undo()) !== false) undone.push(c.name);
      }
      return undone;
    };
    return shielded ? CancellationScope.nonCancellable(undoAll) : undoAll();
  }
}
