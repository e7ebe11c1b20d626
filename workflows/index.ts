// The workflow bundle entry: every workflow type the worker runs.
export { paymentWorkflow, refundWorkflow } from './payment';
export { streamWorkflow } from './stream';
export { grantJobWorkflow } from './job';
export { sessionWorkflow } from './session';
export { subaccountCreationWorkflow, subaccountEliminationWorkflow, subaccountLifecycleWorkflow, webhookDeliveryWorkflow } from './entities';
export { billingClockWorkflow } from './billingClock';
export { reconcilerWorkflow } from './reconciler';
export { checkpointWorkflow } from './checkpoints';
// how each of them moves between worker versions (a rolling deploy)
import './versioning';
