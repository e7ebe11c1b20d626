import { get, type StreamItem, type StreamView } from './api';

/** How far back a search looks: the newest SEARCH_PAGES × 100 streams the key can list. */
const SEARCH_PAGES = 5;
const PAGE = 100;
/** What each status filter of GET /v1/streams lists. */
const LISTED: Record<string, Array<StreamItem['status']>> = { open: ['STREAMING', 'PAUSED'], paused: ['PAUSED'], closed: ['CONFIRMED'], failed: ['FAILED'] };

/** A stream matches when its ref, payer or payee contains the text (case-insensitive), or a distribution member's party does. */
export const matches = (s: StreamItem, text: string) => {
  const t = text.toLowerCase();
  return [s.ref, s.payer, s.payee, ...(s.members?.map((m) => m.party) ?? [])].some((v) => v?.toLowerCase().includes(t));
};

/**
 * Streams whose ref or party contains `text`, among those the key can list. GET
 * /v1/streams filters by status only, so the matching is done here, over the newest
 * SEARCH_PAGES pages; a ref typed in full is also looked up on its own
 * (GET /v1/streams/:ref), so an older stream is still found by its exact ref.
 */
export async function searchStreams(text: string, status: string): Promise<StreamItem[]> {
  const found: StreamItem[] = [];
  let after: string | undefined;
  for (let i = 0; i < SEARCH_PAGES; i++) {
    const q = new URLSearchParams({ limit: String(PAGE), ...(status !== 'all' && { status }), ...(after && { after }) });
    const page = await get<{ streams: StreamItem[]; next?: string }>(`/v1/streams?${q}`);
    found.push(...page.streams.filter((s) => matches(s, text)));
    if (!page.next) break;
    after = page.next;
  }
  if (!found.some((s) => s.ref === text)) {
    // not the key's, not a stream, or not a valid ref at all: then simply not found
    const exact = await get<StreamView>(`/v1/streams/${encodeURIComponent(text)}`).catch(() => undefined);
    if (exact && (status === 'all' || LISTED[status]?.includes(exact.status))) found.unshift(exact);
  }
  return found;
}
