import { get, isOpen, newIdempotencyKey, post, type Account, type StreamItem, type StreamView } from './api';
import { confirmAction, type Confirmation } from './confirm';
import { errorNote, h, units } from './dom';
import type { Context } from './pages';

/**
 * The controls of an open stream, each behind a confirmation: pause or resume, top up,
 * change the rate, cancel. They call the API's stream-control routes with the pasted key
 * and let the API decide who may do what (streamAccess.ts): a refusal is shown in the
 * API's own words. The panel is built once per page and kept across polls (the page
 * redraws every second; typed amounts and the last outcome must survive that), and
 * rebuilt only when the stream's state changes what can be done.
 */
export function streamActions(ctx: Context, ref: string) {
  const path = `/v1/streams/${encodeURIComponent(ref)}`;
  const controls = h('div', { class: 'actions' });
  const outcome = h('p', { class: 'outcome', hidden: true });
  const el = h('section', { class: 'card', 'data-test': 'actions' }, h('h2', {}, 'Actions'), controls, outcome);
  let state = '';
  /**
   * The actions whose request is on its way, by their button's data-test. Only the same
   * action waits for its own answer (its button is disabled, also when the panel is rebuilt
   * meanwhile): a top-up while a slow resume is still answering goes through at once.
   */
  const inFlight = new Set<string>();
  const setEnabled = (action: string) =>
    controls.querySelectorAll<HTMLButtonElement>(`[data-test="${action}"]`).forEach((b) => (b.disabled = inFlight.has(action)));

  const say = (text: string) => {
    outcome.hidden = false;
    outcome.className = 'outcome ok';
    outcome.replaceChildren(h('span', { 'data-test': 'action-done' }, text));
  };
  /** A refusal: the API's message, and its request id in small text (or the console's own check). */
  const fail = (error: unknown) => {
    outcome.hidden = false;
    outcome.className = 'outcome bad';
    outcome.replaceChildren(...Array.from(errorNote(error, 'action-error').childNodes));
  };

  /** Asks, then calls (`action` names the button that asked); whatever the answer, the page reads the stream again. */
  async function act(action: string, confirmation: Confirmation, call: () => Promise<string>) {
    if (inFlight.has(action) || !(await confirmAction(confirmation))) return;
    inFlight.add(action);
    setEnabled(action);
    outcome.hidden = true;
    try {
      say(await call());
    } catch (error) {
      fail(error);
    } finally {
      inFlight.delete(action);
      setEnabled(action);
      ctx.refresh();
    }
  }

  const button = (label: string, test: string, onclick: () => void, tone?: 'danger' | 'secondary') =>
    h('button', { type: 'button', class: tone, 'data-test': test, onclick, disabled: inFlight.has(test) }, label);
  /** A form's submit button, held like the others while its request is on its way. */
  const submit = (label: string, test: string) => h('button', { type: 'submit', 'data-test': test, disabled: inFlight.has(test) }, label);

  function pauseOrResume(s: StreamView) {
    const paused = s.status === 'PAUSED';
    const action = paused ? 'resume' : 'pause';
    return button(paused ? 'Resume' : 'Pause', `action-${action}`, () =>
      act(
        `action-${action}`,
        paused
          ? { title: `Resume stream ${ref}?`, body: `Ticks start again at ${units(s.ratePerTick)} per tick; the tick numbering goes on.`, confirm: 'Resume', dismiss: 'Keep it paused' }
          : { title: `Pause stream ${ref}?`, body: 'No tick is billed until it is resumed; nothing already owed is lost.', confirm: 'Pause', dismiss: 'Keep it streaming' },
        async () => {
          const { status } = await post(`${path}/${action}`, {});
          if (status === 202) return `${action === 'pause' ? 'Pause' : 'Resume'} accepted; the stream's workflow has not confirmed it yet.`;
          return action === 'pause' ? 'Paused: no ticks until it is resumed.' : 'Resumed.';
        },
      ),
    );
  }

  const cancel = (s: StreamView) =>
    button('Cancel stream', 'action-cancel', () =>
      act(
        'action-cancel',
        {
          title: `Cancel stream ${ref}?`,
          body: `It closes now: the ticks due are billed and what is left of its money stays with ${s.payer}. A cancelled stream cannot be reopened.`,
          confirm: 'Cancel the stream',
          dismiss: 'Keep it streaming',
          danger: true,
        },
        async () => {
          const { status, body } = await post<StreamItem>(`${path}/cancel`, {});
          return status === 202 ? 'Cancel accepted; the stream is settling.' : `Cancelled: ${units(body.totalPaid)} paid over ${units(body.ticks)} ticks.`;
        },
      ),
    );

  /** An amount typed by the operator: a whole number of minor units, or a message why not. */
  const amountOf = (input: HTMLInputElement) => {
    const n = Number(input.value);
    return input.value.trim() !== '' && Number.isSafeInteger(n) && n > 0 ? n : undefined;
  };

  function topUp(s: StreamView) {
    const amount = h('input', { type: 'number', min: 1, step: 1, inputmode: 'numeric', placeholder: 'amount', 'data-test': 'topup-amount', required: true }) as HTMLInputElement;
    const from = h('select', { 'data-test': 'topup-from', 'aria-label': 'from account' }) as HTMLSelectElement;
    // the account the stream pays from comes preselected; any other of the key's may be picked
    void fundingAccounts(ctx, s).then((accounts) =>
      from.replaceChildren(...accounts.map((a) => h('option', { value: a.id, selected: a.id === s.fromAccountId }, `${a.id} (${units(a.available)} available)`))));
    return h('form', {
      class: 'action-form',
      onsubmit: (e: Event) => {
        e.preventDefault();
        const n = amountOf(amount);
        if (n === undefined) return fail('A top-up is a whole number of minor units, above 0.');
        if (!from.value) return fail('No account of yours to top up from.');
        void act(
          'action-topup',
          { title: `Top up stream ${ref} by ${units(n)}?`, body: `${units(n)} moves from ${from.value} into the stream's escrow, and its cap grows by as much (now ${units(s.maxTotal)}).`, confirm: 'Top up', dismiss: 'Back' },
          async () => {
            // one key per confirmed top-up: a retry of this request is this top-up, not a second one
            const { body } = await post<{ maxTotal?: number }>(`${path}/deposits`, { fromAccountId: from.value, amount: n }, { 'idempotency-key': newIdempotencyKey() });
            amount.value = '';
            return `Topped up by ${units(n)} from ${from.value}: the cap is now ${units(body.maxTotal)}.`;
          },
        );
      },
    }, h('label', {}, 'Top up'), amount, h('label', {}, 'from'), from, submit('Top up…', 'action-topup'));
  }

  function rate(s: StreamView) {
    const input = h('input', { type: 'number', min: 1, step: 1, inputmode: 'numeric', placeholder: String(s.ratePerTick), 'data-test': 'rate-input', required: true }) as HTMLInputElement;
    return h('form', {
      class: 'action-form',
      onsubmit: (e: Event) => {
        e.preventDefault();
        const n = amountOf(input);
        if (n === undefined) return fail('A rate is a whole number of minor units per tick, above 0.');
        void act(
          'action-rate',
          { title: `Change the rate of ${ref}?`, body: `From ${units(s.ratePerTick)} to ${units(n)} per tick, from the next tick on.`, confirm: 'Change the rate', dismiss: 'Back' },
          async () => {
            const { status } = await post(`${path}/rate`, { ratePerTick: n });
            input.value = '';
            // a stream opened with rateConsent 'payee' takes the change as a proposal
            return status === 202 ? `Proposed ${units(n)} per tick: it applies once ${s.payee ?? 'the payee'} accepts.` : `The rate is now ${units(n)} per tick, from the next tick.`;
          },
        );
      },
    }, h('label', {}, 'Rate per tick'), input, submit('Change rate…', 'action-rate'));
  }

  /**
   * What can be done now: nothing once closed; a top-up only where there is a cap for it to
   * raise. Rebuilt when the state, the rate or the cap the confirmations quote has changed.
   */
  function update(s: StreamView): HTMLElement | null {
    if (!isOpen(s)) return outcome.hidden ? null : h('section', { class: 'card' }, outcome);
    const now = `${s.status}|${s.maxTotal}|${s.ratePerTick}|${s.proposedRatePerTick}`;
    if (now !== state) {
      state = now;
      controls.replaceChildren(
        h('div', { class: 'action-row' }, pauseOrResume(s), cancel(s)),
        ...(s.maxTotal !== undefined ? [topUp(s)] : []),
        rate(s),
        ...(s.proposedRatePerTick !== undefined ? [h('p', { class: 'hint' }, `A rate of ${units(s.proposedRatePerTick)} per tick is proposed, waiting for ${s.payee ?? 'the payee'}.`)] : []),
      );
    }
    return el;
  }

  return { update };
}

/**
 * The accounts a top-up may come from: a party's own (the API takes no other); the
 * admin's, the payer's (the admin must name an owner to list accounts).
 */
async function fundingAccounts(ctx: Context, s: StreamView): Promise<Account[]> {
  const owner = ctx.config.actor.kind === 'admin' ? `?ownerId=${encodeURIComponent(s.payer)}` : '';
  const { accounts } = await get<{ accounts: Account[] }>(`/v1/accounts${owner}`).catch(() => ({ accounts: [] as Account[] }));
  return accounts.filter((a) => a.kind !== 'world' && a.kind !== 'pool');
}
