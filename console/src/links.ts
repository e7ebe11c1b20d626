import type { ConsoleConfig, StreamItem } from './api';
import { h } from './dom';

/** Links into the Temporal Web UI, when the API knows where it is. */
export function temporalLink(config: ConsoleConfig, label: string, path: string, test?: string) {
  if (!config.temporalUiUrl) return null;
  return h('a', { href: `${config.temporalUiUrl}/namespaces/${encodeURIComponent(config.namespace)}/${path}`, target: '_blank', rel: 'noopener', class: 'external', 'data-test': test }, `${label} ↗`);
}
export const workflowsWhere = (query: string) => `workflows?query=${encodeURIComponent(query)}`;

export const streamLink = (ref: string) => h('a', { href: `#/streams/${encodeURIComponent(ref)}` }, ref);
export const payeeOf = (s: Pick<StreamItem, 'payee' | 'kind'>) => s.payee ?? (s.kind === 'distribution' ? 'distribution' : '—');
