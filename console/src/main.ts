import './style.css';
import { ApiError, apiKey, forgetApiKey, get, setApiKey, type ConsoleConfig } from './api';
import { errorNote, h, time } from './dom';
import { auditPage, crownPage, entitiesPage, entityPage, poolPage, streamPage, streamsPage, type Context, type Page } from './pages';

/**
 * The operator console: a hash router over read-only pages. Live pages poll the API
 * (every second for streams): EventSource cannot send an Authorization header, and a
 * once-a-second GET of an indexed page is cheap next to holding a stream open.
 */
const app = document.getElementById('app')!;
let generation = 0;

function route(ctx: Context): Page {
  const [path = '', query = ''] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(query);
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case undefined:
    case 'streams':
      return parts[1] ? streamPage(ctx, parts[1]) : streamsPage(ctx, params);
    case 'entity':
      return parts[1] ? entityPage(ctx, parts[1]) : entitiesPage(ctx, params);
    case 'pool':
      return poolPage();
    case 'crown':
      return crownPage(params);
    case 'audit':
      return auditPage(ctx);
    default:
      return { title: 'Not found', load: async () => h('p', { class: 'empty' }, `No page ${path}.`) };
  }
}

function shell(ctx: Context, content: HTMLElement) {
  const who = ctx.config.actor.kind === 'admin' ? 'admin' : ctx.config.actor.party!;
  const current = location.hash.split('/')[1]?.split('?')[0] ?? 'streams';
  const link = (hash: string, label: string) => h('a', { href: `#/${hash}`, class: current === hash || (hash === 'streams' && current === '') ? 'active' : undefined }, label);
  return h(
    'div', { class: 'shell' },
    h('header', {},
      h('div', { class: 'brand' }, 'Sluice', h('span', {}, 'console')),
      h('nav', {}, link('streams', 'Streams'), link('entity', ctx.config.actor.kind === 'admin' ? 'Entities' : 'Entity'), link('pool', 'Pool'), link('crown', 'Crown'), link('audit', 'Audit')),
      h('div', { class: 'who' }, h('span', { 'data-test': 'who' }, who), h('button', { class: 'link', onclick: () => { forgetApiKey(); void start(); } }, 'Sign out')),
    ),
    h('main', {}, content),
  );
}

async function show(ctx: Context) {
  const mine = ++generation;
  const page = route(ctx);
  document.title = `${page.title} · Sluice`;
  const content = h('div', { class: 'content' }, h('p', { class: 'hint' }, 'Loading…'));
  app.replaceChildren(shell(ctx, content));
  const status = h('p', { class: 'status' });
  // an action reads the page again at once (and a page that stopped polling, a closed stream's, once more)
  let wake = () => {};
  ctx.refresh = () => mine === generation && wake();
  for (;;) {
    try {
      const body = await page.load();
      if (mine !== generation) return;
      status.textContent = page.everyMs ? `live · updated ${time(new Date())}` : '';
      // a page that keeps its own root (a form being typed in) stays in place: moving it would take the focus away
      if (content.firstChild !== body || status.parentNode !== content) content.replaceChildren(body, status);
    } catch (error) {
      if (mine !== generation) return;
      if (error instanceof ApiError && error.status === 401) return void start('That key is no longer accepted.');
      content.replaceChildren(errorNote(error));
    }
    await new Promise<void>((r) => {
      wake = r;
      if (page.everyMs) setTimeout(r, page.everyMs);
    });
    if (mine !== generation) return;
  }
}

function login(message?: string) {
  generation++;
  window.onhashchange = null;
  const key = h('input', { type: 'password', name: 'key', placeholder: 'API key', autocomplete: 'off', required: true }) as HTMLInputElement;
  const error = h('div', {}, message ? errorNote(message, 'login-error', 'p') : null);
  const form = h('form', {
    class: 'login card',
    onsubmit: async (e: Event) => {
      e.preventDefault();
      try {
        const config = await get<ConsoleConfig>('/v1/console/config', key.value.trim());
        setApiKey(key.value.trim());
        await enter(config);
      } catch (err) {
        error.replaceChildren(errorNote(err, 'login-error', 'p'));
      }
    },
  },
    h('div', { class: 'brand' }, 'Sluice', h('span', {}, 'console')),
    h('p', {}, 'Paste the admin key or a party key. It stays in this tab (sessionStorage) and goes with every request; the API decides what it may see.'),
    key, h('button', { type: 'submit' }, 'Sign in'), error);
  app.replaceChildren(h('div', { class: 'center' }, form));
  key.focus();
}

/** Signed in: the pages, for the key whose config was just read (sign-in reads it once, not twice). */
async function enter(config: ConsoleConfig) {
  const ctx: Context = { config, refresh: () => {} };
  window.onhashchange = () => void show(ctx);
  await show(ctx);
}

async function start(message?: string) {
  if (!apiKey()) return login(message);
  try {
    await enter(await get<ConsoleConfig>('/v1/console/config'));
  } catch (error) {
    forgetApiKey();
    login(error instanceof ApiError ? error.message : String(error));
  }
}

void start();
