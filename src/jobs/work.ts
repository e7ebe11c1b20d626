import { simulatedCost, type JobWork } from '../domain/grants';

/** The job's work, as the grant job workflow runs it: an activity that reports what it cost. */
export interface WorkRunner {
  perform(job: { jobId: string; work: JobWork; estimatedCost: number; requestHash: string }, attempt: number): Promise<{ actualCost: number }>;
}

export class WorkFailed extends Error {
  override name = 'WorkFailed';
}

/**
 * The default work: simulates a job. Its cost is `simulate.actualCost`, or the
 * estimate moved by up to ±20% (simulatedCost: the same request costs the same);
 * `simulate.failTimes` makes the first N attempts (or all) fail, so every path of
 * the workflow can be driven from a request.
 */
export const simulatedWork: WorkRunner = {
  async perform(job, attempt) {
    const sim = job.work.simulate ?? {};
    if (sim.failTimes === 'always' || (sim.failTimes !== undefined && attempt <= sim.failTimes)) {
      throw new WorkFailed(`simulated failure of job ${job.jobId} (attempt ${attempt})`);
    }
    if (sim.durationMs) await new Promise((r) => setTimeout(r, sim.durationMs));
    return { actualCost: sim.actualCost ?? simulatedCost(job.estimatedCost, job.requestHash) };
  },
};
