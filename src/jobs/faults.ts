import { SAGA_STEPS, type SagaStep } from '../domain/entities';

/**
 * Fault injection for the creation saga (tests and demos only): `SLUICE_FAULTS`
 * names steps that fail, optionally for one entity only, either every time
 * (`always`: the step fails at once, not retried), for the first N attempts
 * (then it succeeds on retry), or `after` the step committed (the reply lost, not
 * retried: the compensations then meet a step that did its work):
 *
 *   SLUICE_FAULTS="fund=always,hold_collateral@acme=2,activate@acme/3=after"
 *
 * With nothing configured no step is touched: production paths are unchanged.
 */
export interface Fault {
  step: SagaStep;
  /** An entity id, or one subaccount id (`<entity>/<n>`). */
  entity?: string;
  times: number | 'always' | 'after';
}

export function parseFaults(text: string | undefined): Fault[] {
  return (text ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)
    .map((part) => {
      const m = /^([a-z_]+)(?:@([a-z0-9][a-z0-9_.-]*(?:\/[1-9][0-9]*)?))?=(always|after|[0-9]+)$/.exec(part);
      if (!m || !SAGA_STEPS.includes(m[1] as SagaStep)) {
        throw new Error(`bad fault "${part}": expected <step>[@<entity>]=always|after|<n>, steps ${SAGA_STEPS.join(', ')}`);
      }
      return { step: m[1] as SagaStep, ...(m[2] && { entity: m[2] }), times: m[3] === 'always' || m[3] === 'after' ? m[3] : Number(m[3]) };
    });
}

/** The fault that applies to this step, subject (an entity id, or a subaccount id and its entity) and attempt, if any. */
export function faultFor(faults: Fault[], step: SagaStep, subject: string, attempt: number): Fault | undefined {
  const entity = subject.split('/')[0];
  return faults.find(
    (f) => f.step === step && (f.entity === undefined || f.entity === subject || f.entity === entity) && (typeof f.times === 'string' || attempt <= f.times),
  );
}
