// bench:streams' worker's workflow bundle entry: every real workflow plus the bare baseline.
export * from '../../workflows';
export { bareTickWorkflow } from './bareTickWorkflow';
