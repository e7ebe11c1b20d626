import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/**
 * Search attributes that make Sluice workflows findable in the Temporal UI
 * (e.g. `SluicePayer = "alice" AND SluiceStatus = "STREAMING"`). Registered on the
 * namespace by the launcher and the test setup; set by the API at start and kept
 * current by the workflows.
 */
export const SA_KIND = defineSearchAttributeKey('SluiceKind', SearchAttributeType.KEYWORD);
export const SA_PAYER = defineSearchAttributeKey('SluicePayer', SearchAttributeType.KEYWORD);
export const SA_PAYEE = defineSearchAttributeKey('SluicePayee', SearchAttributeType.KEYWORD);
export const SA_STATUS = defineSearchAttributeKey('SluiceStatus', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTES = [SA_KIND, SA_PAYER, SA_PAYEE, SA_STATUS] as const;
