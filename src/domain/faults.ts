import { CREATION_COMPENSATIONS, ELIMINATION_STEPS, SAGA_STEPS } from './entities';
import { GRANT_COMPENSATIONS, GRANT_STEPS } from './grants';

/**
 * Fault injection (tests and demos only): `SLUICE_FAULTS` names the activities that
 * fail, optionally for one subject only (an entity, one subaccount `<entity>/<n>`,
 * or a job id), and how:
 *
 * - `always`: the step is refused for good, before it does anything (not retried,
 *   as a refusal by the ledger would be);
 * - `<n>`: the first n attempts fail before doing anything, then it succeeds on retry;
 * - `after`: the first attempt commits, then fails as if its reply were lost. A
 *   creation step (a few retries, then the saga compensates) is then not retried,
 *   so the compensations meet a step that did its work; every other step and every
 *   compensation is retried until it commits, and its retry must find its own result.
 *
 *   SLUICE_FAULTS="fund=always,hold_collateral@acme=2,activate@acme/3=after,settle@job-7=1,unfund@acme=after"
 *
 * Steps: the creation saga's, its compensations, the grant job's and its
 * compensations, the elimination's. With nothing configured no activity is
 * wrapped at all: production paths are unchanged.
 */
export const FAULT_STEPS = [...SAGA_STEPS, ...CREATION_COMPENSATIONS, ...GRANT_STEPS, ...GRANT_COMPENSATIONS, ...ELIMINATION_STEPS] as const;
export type FaultStep = (typeof FAULT_STEPS)[number];

/** The steps whose `after` fault is final (the creation steps: their retries are bounded, then the saga compensates). */
const AFTER_IS_FINAL: readonly FaultStep[] = SAGA_STEPS;

export interface Fault {
  step: FaultStep;
  /** An entity id, one subaccount id (`<entity>/<n>`) or a job id. */
  entity?: string;
  times: number | 'always' | 'after';
}

export function parseFaults(text: string | undefined): Fault[] {
  return (text ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)
    .map((part) => {
      const m = /^([a-z_]+)(?:@([A-Za-z0-9][A-Za-z0-9_.:-]*(?:\/[1-9][0-9]*)?))?=(always|after|[0-9]+)$/.exec(part);
      if (!m || !FAULT_STEPS.includes(m[1] as FaultStep)) {
        throw new Error(`bad fault "${part}": expected <step>[@<subject>]=always|after|<n>, steps ${FAULT_STEPS.join(', ')}`);
      }
      return { step: m[1] as FaultStep, ...(m[2] && { entity: m[2] }), times: m[3] === 'always' || m[3] === 'after' ? m[3] : Number(m[3]) };
    });
}

/** The fault that applies to this step, subject (an entity id, a subaccount id and its entity, or a job id) and attempt, if any. */
export function faultFor(faults: Fault[], step: FaultStep, subject: string, attempt: number): Fault | undefined {
  const entity = subject.split('/')[0];
  return faults.find(
    (f) =>
      f.step === step &&
      (f.entity === undefined || f.entity === subject || f.entity === entity) &&
      (f.times === 'always' || (f.times === 'after' ? attempt === 1 : attempt <= f.times)),
  );
}

/** Whether the injected failure is final (not retried by Temporal). */
export const faultIsFinal = (fault: Fault) => fault.times === 'always' || (fault.times === 'after' && AFTER_IS_FINAL.includes(fault.step));
