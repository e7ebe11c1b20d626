import { get, post, read, type Account, type StreamItem } from './api';
import { confirmAction } from './confirm';
import { duration, errorNote, h, units } from './dom';

/** The API's bounds on a tick interval (src/api/routes/streams.ts): 100 ms to a day. */
const TICK_MS_MIN = 100;
const TICK_MS_MAX = 86_400_000;
/** How long an open answered 202 (its workflow still starting) is waited for before the page goes to it anyway. */
const OPENING_WAIT_MS = 60_000;

/**
 * A ref for one stream the form opens: `console-` and 16 random hex digits, from
 * getRandomValues (randomUUID needs https or localhost). Made once per form and kept
 * until a stream opens with it, so a retried or double-sent open finds the stream the
 * first one opened (the API answers a repeated ref with the same terms with that stream,
 * and other terms with ref_conflict), never a second stream.
 */
export function newStreamRef(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/**
 * "Open a stream" on the Streams page, for a party key: from one of the key's own
 * accounts (GET /v1/accounts) to any account, at a rate per tick, with a cap, a tick
 * interval and a mode (escrow holds the cap up front; payg bills the account as it goes
 * and may be open-ended). The terms are confirmed in a dialog before POST /v1/streams is
 * sent with the form's generated ref; once open, the page goes to the new stream. A
 * refusal is shown in the API's words with its request id. Built once per visit of the
 * page and kept across its polls, so what is typed stays.
 */
export function openStreamForm(): HTMLElement {
  let ref = newStreamRef();
  let busy = false;
  const num = (name: string, attrs: Parameters<typeof h>[1] = {}) =>
    h('input', { type: 'number', name, inputmode: 'numeric', min: 1, step: 1, 'data-test': `open-${name}`, ...attrs }) as HTMLInputElement;
  const from = h('select', { name: 'from', 'data-test': 'open-from', required: true }) as HTMLSelectElement;
  const to = h('input', { name: 'to', placeholder: 'account id', autocapitalize: 'none', autocomplete: 'off', 'data-test': 'open-to', required: true }) as HTMLInputElement;
  const rate = num('rate', { placeholder: 'units', required: true });
  const max = num('max', { placeholder: 'units' });
  const interval = num('interval', { min: TICK_MS_MIN / 1000, max: TICK_MS_MAX / 1000, step: 0.1, value: 1, required: true });
  const mode = h('select', { name: 'mode', 'data-test': 'open-mode' },
    h('option', { value: 'escrow', title: 'the cap is held up front' }, 'escrow'),
    h('option', { value: 'payg', title: 'each tick billed from the account as it comes' }, 'payg')) as HTMLSelectElement;
  const refNote = h('code', { 'data-test': 'open-ref' }, ref);
  const outcome = h('div', { class: 'outcome', hidden: true });
  const submit = h('button', { type: 'submit', 'data-test': 'open-submit' }, 'Open stream…');

  // the key's own accounts, with what each has available (a party may open streams from its own only)
  void get<{ accounts: Account[] }>('/v1/accounts?limit=100')
    .then(({ accounts }) => accounts.filter((a) => a.kind !== 'world' && a.kind !== 'pool'))
    .catch(() => [] as Account[])
    .then((accounts) => from.replaceChildren(...(accounts.length
      ? accounts.map((a) => h('option', { value: a.id }, `${a.id} · ${units(a.available)}`))
      : [h('option', { value: '' }, 'no account of yours')])));

  const fail = (error: unknown) => {
    outcome.hidden = false;
    outcome.className = 'outcome bad';
    outcome.replaceChildren(...Array.from(errorNote(error, 'open-error').childNodes));
  };
  const say = (text: string) => {
    outcome.hidden = false;
    outcome.className = 'outcome ok';
    outcome.replaceChildren(h('span', { 'data-test': 'open-done' }, text));
  };

  /** The terms as typed, or what is wrong with them (the console's own check; the API checks again). */
  function terms(): { body: Record<string, unknown>; said: string } | string {
    const whole = (input: HTMLInputElement) => (input.value.trim() !== '' && Number.isSafeInteger(Number(input.value)) && Number(input.value) > 0 ? Number(input.value) : undefined);
    const ratePerTick = whole(rate);
    const maxTotal = whole(max);
    const tickIntervalMs = Math.round(Number(interval.value) * 1000);
    if (!from.value) return 'No account of yours to pay from.';
    if (!to.value.trim()) return 'Say which account the stream pays.';
    if (ratePerTick === undefined) return 'A rate is a whole number of minor units per tick, above 0.';
    if (max.value.trim() !== '' && maxTotal === undefined) return 'A cap is a whole number of minor units, above 0.';
    if (mode.value === 'escrow' && maxTotal === undefined) return 'An escrow stream needs a cap: it is held up front (only a payg stream may be open-ended).';
    if (!(tickIntervalMs >= TICK_MS_MIN && tickIntervalMs <= TICK_MS_MAX)) return `A tick is every ${TICK_MS_MIN / 1000} s to ${TICK_MS_MAX / 3_600_000} h.`;
    const body = { ref, fromAccountId: from.value, toAccountId: to.value.trim(), ratePerTick, ...(maxTotal !== undefined && { maxTotal }), tickIntervalMs, mode: mode.value };
    const money = mode.value === 'escrow'
      ? `${units(maxTotal)} is held on ${from.value} now, and what is not paid goes back at the close.`
      : maxTotal !== undefined ? `Each tick is billed from ${from.value} as it comes, up to ${units(maxTotal)}.` : `Each tick is billed from ${from.value} as it comes, with no cap: it runs until cancelled or the account runs dry.`;
    return { body, said: `${from.value} pays ${to.value.trim()} ${units(ratePerTick)} every ${duration(tickIntervalMs)}${tickIntervalMs % 1000 ? ` (${tickIntervalMs} ms)` : ''}, the first tick at once. ${money}` };
  }

  /** Once open (201, or 200: the same ref opened it already), the stream's page; a 202 waits until the stream can be read. */
  async function opened(status: number, body: StreamItem | { ref?: string }) {
    const opened = ref;
    if (status === 202) {
      say(`Opening ${opened}: its workflow has not answered yet…`);
      for (const until = Date.now() + OPENING_WAIT_MS; Date.now() < until; ) {
        await new Promise((r) => setTimeout(r, 500));
        if ((await read(`/v1/streams/${encodeURIComponent(opened)}`).catch(() => ({ status: 0 }))).status === 200) break;
      }
    }
    ref = newStreamRef();
    refNote.textContent = ref;
    for (const input of [to, rate, max]) input.value = '';
    outcome.hidden = true;
    location.hash = `#/streams/${encodeURIComponent((body as { ref?: string }).ref ?? opened)}`;
  }

  const form = h('form', {
    class: 'open-form',
    onsubmit: async (e: Event) => {
      e.preventDefault();
      if (busy) return;
      const t = terms();
      if (typeof t === 'string') return fail(t);
      outcome.hidden = true;
      if (!(await confirmAction({ title: `Open stream ${ref}?`, body: t.said, confirm: 'Open the stream', dismiss: 'Back' }))) return;
      busy = true;
      submit.setAttribute('disabled', '');
      try {
        const { status, body } = await post<StreamItem>('/v1/streams', t.body);
        await opened(status, body);
      } catch (error) {
        // refused: nothing was opened under this ref, so the same ref goes with the next try
        fail(error);
      } finally {
        busy = false;
        submit.removeAttribute('disabled');
      }
    },
  },
    h('label', {}, 'From (your account)', from),
    h('label', {}, 'To account', to),
    h('label', {}, 'Rate per tick', rate),
    h('label', {}, 'Max total (cap)', max),
    h('label', {}, 'Tick every (seconds)', interval),
    h('label', {}, 'Mode', mode),
    h('div', { class: 'open-submit' }, submit, h('span', { class: 'open-ref' }, 'ref ', refNote, ' (a retry finds this stream, never opens a second)')),
  );
  return h('details', { class: 'card open-stream', 'data-test': 'open-stream' },
    h('summary', { 'data-test': 'open-stream-toggle' }, 'Open a stream'),
    form,
    outcome,
  );
}
