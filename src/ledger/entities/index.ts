/**
 * The entities ledger, by concern: entities.ts (rows, registration, reads, creation
 * limits), saga.ts (the creation saga's steps and compensations), elimination.ts (the
 * rules, the challenge and elimination), webhooks.ts (delivery attempts), webhookSecrets.ts
 * (the secrets that sign them, their rotation), dashboard.ts
 * (the dashboard and the subaccounts' figures). This is its public face; the modules
 * of src/ledger import the one they need.
 */
export {
  capReached,
  creationLimits,
  creationsRateLimited,
  findSubaccount,
  getEntity,
  getSubaccount,
  listSubaccounts,
  registerEntity,
  rulesOf,
  toSubaccount,
  ROLLBACK_RETRY_AFTER_S,
  SUBACCOUNTS_PAGE_MAX,
  type CreationLimits,
  type EntityInput,
  type EntityRow,
  type Limits,
} from './entities';
export {
  activateSubaccount,
  allocateSubaccount,
  failStrandedCreation,
  fundSubaccount,
  holdCollateral,
  markAllocationFailed,
  markSubaccountFailed,
  releaseCollateral,
  unfundSubaccount,
} from './saga';
export {
  assessSubaccount,
  beginElimination,
  concludeChallenge,
  openStreamsOf,
  settleElimination,
  streamsToCloseOf,
  type Assessment,
  type Settlement,
} from './elimination';
export { listDeliveries, recordDelivery, DELIVERIES_PAGE_MAX } from './webhooks';
export { retireWebhookSecret, rotateWebhookSecret, signingSecrets, OVERLAP_S_DEFAULT, OVERLAP_S_MAX, OVERLAP_S_MIN } from './webhookSecrets';
export { entityDashboard, DASHBOARD_ROWS_MAX, type Dashboard, type DashboardRow } from './dashboard';
