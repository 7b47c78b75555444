// ReconLayer developer settings (/dashboard): API keys, integration logs, API status.
//
// Plain ES module, no framework, no build step. Served by the gateway under a strict CSP
// (script-src 'self' [+ the Clerk Frontend API origin]): no inline script, no eval.
//
// Rules this file keeps:
// - Every string that came from a server is put in the page with textContent (or as an
//   input's .value), never with innerHTML.
// - An API key's plaintext lives only in a local variable and a read-only input while the
//   "Save your API key" step is open; it is never logged, never stored (localStorage,
//   sessionStorage, URL), and the elements holding it are removed when the dialog closes.
// - In Clerk mode a fresh session token is requested (Clerk.session.getToken()) before every
//   API call; tokens are short-lived and ClerkJS refreshes them.

const SCOPES = [
  'payment_intents:write',
  'payment_intents:read',
  'reconciliation_cases:read',
  'imports:write',
  'imports:read',
  'exports:read',
  'api_keys:manage',
];
const DEFAULT_SCOPES = ['payment_intents:read', 'reconciliation_cases:read'];
const SHOW_ONCE_WARNING =
  'This key will only be shown once. Copy it now and store it securely. After closing this dialog, only the prefix is visible.';
const KEYS_PAGE_SIZE = 20;
const LOGS_FETCH_LIMIT = 100;
const LOGS_PAGE_SIZE = 5;
const DEPENDENCY_NAMES = {
  keys_service: 'Keys service',
  audit_service: 'Audit service',
  redis: 'Redis',
  database: 'Database',
};

const $ = (id) => document.getElementById(id);

/** The page's state (nothing secret is kept here). */
const state = {
  mode: 'unconfigured', // local | clerk | unconfigured
  orgId: 'org_dev', // local mode only
  clerk: null,
  generation: 0, // bumps when the identity (org / user) changes: stale responses are dropped
  keys: { cursors: [null], page: 0, nextCursor: null, rows: [], loaded: false, forbidden: false },
  logs: { events: [], nextCursor: null, page: 0, filter: '', loaded: false },
  status: { loaded: false },
  activeTab: 'keys',
};

// ---------------------------------------------------------------------------------------
// Small DOM helpers (text only)

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== 'string') node[k] = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function show(node, visible = true) {
  node.hidden = !visible;
}

function setAlert(node, message) {
  node.textContent = message || '';
  show(node, Boolean(message));
}

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

function parseDate(iso) {
  if (typeof iso !== 'string') return null;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** A <time> element: the formatted local value, the exact instant in its title. */
function timeEl(iso, format = 'date') {
  const d = parseDate(iso);
  if (!d) return document.createTextNode('—');
  const text = format === 'relative' ? relative(d) : (format === 'datetime' ? dateTimeFmt : dateFmt).format(d);
  return el('time', { datetime: d.toISOString(), title: d.toISOString(), text });
}

function relative(d, now = Date.now()) {
  const s = Math.round((now - d.getTime()) / 1000);
  if (s < 0) return dateTimeFmt.format(d);
  if (s < 45) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  const days = Math.round(h / 24);
  if (days < 31) return days === 1 ? '1 day ago' : `${days} days ago`;
  return dateFmt.format(d);
}

// ---------------------------------------------------------------------------------------
// The API client

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const NETWORK_MESSAGE = 'Could not reach the API. Check your connection and try again.';

/**
 * One API call with the caller's credential. Resolves { status, data, headers } for 2xx;
 * throws ApiError otherwise (status 0: network). A 401 also switches the page to its
 * signed-out state.
 */
async function api(method, path, { body, headers = {}, auth = true } = {}) {
  const generation = state.generation;
  const h = { accept: 'application/json', ...headers };
  if (body !== undefined) h['content-type'] = 'application/json';
  if (auth) {
    if (state.mode === 'clerk') {
      // A fresh token before every call: session tokens live about a minute.
      let token = null;
      try {
        token = state.clerk?.session ? await state.clerk.session.getToken() : null;
      } catch {
        token = null;
      }
      if (!token) {
        const err = new ApiError(401, 'unauthorized', 'Your session has ended. Sign in again.');
        signedOut(err.message);
        throw err;
      }
      h.authorization = `Bearer ${token}`;
    } else if (state.mode === 'local') {
      h['x-organization-id'] = state.orgId;
    }
  }
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
      redirect: 'error',
    });
  } catch {
    throw new ApiError(0, 'network_error', NETWORK_MESSAGE);
  }
  let data = null;
  const text = await res.text().catch(() => '');
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (generation !== state.generation) {
    throw new ApiError(-1, 'stale', 'The organization changed while this request was in flight.');
  }
  if (!res.ok) {
    const message =
      data && typeof data.message === 'string' && data.message
        ? data.message
        : `The API answered ${res.status}${res.statusText ? ` ${res.statusText}` : ''}.`;
    const err = new ApiError(res.status, data?.error ?? 'error', message);
    if (res.status === 401 && auth) signedOut(message);
    throw err;
  }
  return { status: res.status, data, headers: res.headers };
}

function errorMessage(err) {
  if (err instanceof ApiError) return err.message;
  return 'Something went wrong. Try again.';
}

// ---------------------------------------------------------------------------------------
// Signing in

async function loadConfig() {
  try {
    const res = await fetch('/dashboard/config.json', { cache: 'no-store' });
    if (!res.ok) throw new Error(String(res.status));
    return await res.json();
  } catch {
    return { mode: 'unconfigured' };
  }
}

function loadClerkScript(frontendApi, publishableKey) {
  if (window.Clerk) return Promise.resolve(window.Clerk);
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = `${frontendApi}/npm/@clerk/clerk-js@5/dist/clerk.browser.js`;
    script.async = true;
    script.crossOrigin = 'anonymous';
    script.setAttribute('data-clerk-publishable-key', publishableKey);
    script.addEventListener('load', () => (window.Clerk ? resolve(window.Clerk) : reject(new Error('ClerkJS did not initialise'))));
    script.addEventListener('error', () => reject(new Error('ClerkJS could not be loaded')));
    document.head.append(script);
  });
}

function showOnly(id) {
  for (const s of ['boot', 'signed-out', 'unconfigured', 'no-org', 'workspace']) show($(s), s === id);
}

function signedOut(message) {
  closeAllDialogs(true);
  showOnly('signed-out');
  $('signed-out-message').textContent = message || 'Sign in to manage your organization\u2019s developer settings.';
  const signIn = $('sign-in');
  if (state.mode === 'clerk' && state.clerk) {
    show($('signed-out-retry'), false);
    if (!signIn.dataset.mounted) {
      try {
        state.clerk.mountSignIn(signIn);
        signIn.dataset.mounted = '1';
      } catch {
        /* ClerkJS renders its own errors */
      }
    }
  } else {
    show($('signed-out-retry'), true);
  }
}

/** The header's account area: a badge locally; Clerk's organization switcher and user button. */
function renderAccount() {
  const account = $('account');
  if (state.mode === 'local') {
    if (!account.childElementCount) account.append(el('span', { class: 'pill', text: 'Local development' }));
    return;
  }
  if (state.mode !== 'clerk' || !state.clerk) return;
  const clerk = state.clerk;
  const signedIn = Boolean(clerk.user && clerk.session);
  const memberships = clerk.user?.organizationMemberships ?? [];
  // Mounted once each (ClerkJS keeps them up to date), shown only when they apply.
  let switcher = $('org-switcher');
  if (!switcher) {
    switcher = el('div', { id: 'org-switcher', class: 'org-switcher' });
    account.append(switcher);
  }
  const several = signedIn && memberships.length > 1 && typeof clerk.mountOrganizationSwitcher === 'function';
  if (several && !switcher.dataset.mounted) {
    clerk.mountOrganizationSwitcher(switcher, { hidePersonal: true });
    switcher.dataset.mounted = '1';
  }
  show(switcher, several);
  let orgName = $('org-name');
  if (!orgName) {
    orgName = el('span', { id: 'org-name', class: 'pill' });
    account.append(orgName);
  }
  orgName.textContent = clerk.organization ? clerk.organization.name || clerk.organization.id : '';
  show(orgName, signedIn && !several && Boolean(clerk.organization));
  let userButton = $('user-button');
  if (!userButton) {
    userButton = el('div', { id: 'user-button' });
    account.append(userButton);
  }
  if (signedIn && !userButton.dataset.mounted && typeof clerk.mountUserButton === 'function') {
    clerk.mountUserButton(userButton);
    userButton.dataset.mounted = '1';
  }
  show(userButton, signedIn);
}

function identityKey() {
  if (state.mode === 'local') return `local:${state.orgId}`;
  const c = state.clerk;
  return `clerk:${c?.user?.id ?? ''}:${c?.session?.id ?? ''}:${c?.organization?.id ?? ''}`;
}

let lastIdentity = null;

/** Shows the workspace for the current identity; reloads everything when it changed. */
function enterWorkspace() {
  const id = identityKey();
  showOnly('workspace');
  if (id === lastIdentity) return;
  lastIdentity = id;
  state.generation += 1;
  closeAllDialogs(true);
  state.keys = { cursors: [null], page: 0, nextCursor: null, rows: [], loaded: false, forbidden: false };
  state.logs = { events: [], nextCursor: null, page: 0, filter: $('logs-filter').value, loaded: false };
  state.status = { loaded: false };
  loadTab(state.activeTab, true);
}

function onClerkChange() {
  const clerk = state.clerk;
  renderAccount();
  if (!clerk.user || !clerk.session) {
    lastIdentity = null;
    signedOut();
    return;
  }
  if (!clerk.organization) {
    lastIdentity = null;
    showOnly('no-org');
    const holder = $('no-org-switcher');
    if (!holder.dataset.mounted && typeof clerk.mountOrganizationSwitcher === 'function') {
      clerk.mountOrganizationSwitcher(holder, { hidePersonal: true });
      holder.dataset.mounted = '1';
    }
    return;
  }
  enterWorkspace();
}

async function boot() {
  wireTabs();
  wireKeys();
  wireLogs();
  wireStatus();
  wireDialogs();
  const config = await loadConfig();
  state.mode = config.mode;
  if (config.mode === 'local') {
    show($('local-banner'));
    $('org-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const input = $('org-id');
      const value = input.value.trim();
      if (!input.checkValidity() || !value) {
        input.reportValidity();
        return;
      }
      state.orgId = value;
      enterWorkspace();
    });
    $('signed-out-retry').addEventListener('click', () => {
      lastIdentity = null;
      enterWorkspace();
    });
    state.orgId = $('org-id').value.trim() || 'org_dev';
    renderAccount();
    enterWorkspace();
    return;
  }
  if (config.mode === 'clerk' && config.clerkFrontendApi && config.clerkPublishableKey) {
    try {
      state.clerk = await loadClerkScript(config.clerkFrontendApi, config.clerkPublishableKey);
      await state.clerk.load();
    } catch (e) {
      showOnly('signed-out');
      $('signed-out-message').textContent = `Sign-in could not be loaded (${e.message}). Reload the page to try again.`;
      return;
    }
    if (typeof state.clerk.addListener === 'function') state.clerk.addListener(() => onClerkChange());
    onClerkChange();
    return;
  }
  showOnly('unconfigured');
}

// ---------------------------------------------------------------------------------------
// Tabs (WAI-ARIA tabs pattern: arrow keys, Home, End; automatic activation)

const TABS = ['keys', 'logs', 'status'];

function wireTabs() {
  const tabs = TABS.map((t) => $(`tab-${t}`));
  tabs.forEach((tab, i) => {
    tab.addEventListener('click', () => selectTab(TABS[i], false));
    tab.addEventListener('keydown', (e) => {
      let next = null;
      if (e.key === 'ArrowRight') next = (i + 1) % TABS.length;
      else if (e.key === 'ArrowLeft') next = (i - 1 + TABS.length) % TABS.length;
      else if (e.key === 'Home') next = 0;
      else if (e.key === 'End') next = TABS.length - 1;
      if (next === null) return;
      e.preventDefault();
      selectTab(TABS[next], true);
    });
  });
  const fromHash = location.hash.slice(1);
  if (TABS.includes(fromHash)) selectTab(fromHash, false, false);
}

function selectTab(name, focus, load = true) {
  state.activeTab = name;
  for (const t of TABS) {
    const tab = $(`tab-${t}`);
    const selected = t === name;
    tab.setAttribute('aria-selected', String(selected));
    tab.tabIndex = selected ? 0 : -1;
    show($(`panel-${t}`), selected);
    if (selected && focus) tab.focus();
  }
  if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
  if (load && !$('workspace').hidden) loadTab(name, false);
}

function loadTab(name, force) {
  if (name === 'keys' && (force || !state.keys.loaded)) loadKeys();
  if (name === 'logs' && (force || !state.logs.loaded)) loadLogs(false);
  // The status tab always checks at request time.
  if (name === 'status') loadStatus();
}

// ---------------------------------------------------------------------------------------
// API keys

function wireKeys() {
  $('create-key').addEventListener('click', openCreateDialog);
  $('keys-next').addEventListener('click', () => {
    const k = state.keys;
    if (!k.nextCursor) return;
    k.cursors[k.page + 1] = k.nextCursor;
    k.page += 1;
    loadKeys();
  });
  $('keys-prev').addEventListener('click', () => {
    const k = state.keys;
    if (k.page === 0) return;
    k.page -= 1;
    loadKeys();
  });
}

async function loadKeys() {
  const k = state.keys;
  const generation = state.generation;
  setAlert($('keys-error'), '');
  show($('keys-loading'), true);
  const params = new URLSearchParams({ limit: String(KEYS_PAGE_SIZE) });
  const cursor = k.cursors[k.page];
  if (cursor) params.set('cursor', cursor);
  try {
    const { data } = await api('GET', `/v1/api-keys?${params}`);
    if (generation !== state.generation) return;
    k.rows = Array.isArray(data?.data) ? data.data : [];
    k.nextCursor = typeof data?.nextCursor === 'string' ? data.nextCursor : null;
    k.loaded = true;
    k.forbidden = false;
    setCreateAllowed(true);
    renderKeys();
  } catch (err) {
    if (generation !== state.generation || err.status === -1) return;
    k.loaded = false;
    if (err.status === 403) {
      k.forbidden = true;
      k.rows = [];
      setCreateAllowed(false, err.message);
      renderKeys();
    }
    if (err.status !== 401) setAlert($('keys-error'), errorMessage(err));
  } finally {
    if (generation === state.generation) show($('keys-loading'), false);
  }
}

function setCreateAllowed(allowed, reason) {
  const btn = $('create-key');
  btn.disabled = !allowed;
  btn.title = allowed ? '' : reason || '';
}

function renderKeys() {
  const k = state.keys;
  const body = $('keys-body');
  body.replaceChildren(...k.rows.map(keyRow));
  show($('keys-table'), k.rows.length > 0);
  show($('keys-empty'), k.rows.length === 0 && !k.forbidden);
  $('keys-prev').disabled = k.page === 0;
  $('keys-next').disabled = !k.nextCursor;
  const single = k.page === 0 && !k.nextCursor;
  $('keys-page').textContent = single ? '' : `Page ${k.page + 1}`;
  show($('keys-prev').parentElement, !single);
}

function keyRow(key) {
  const revoked = key.status === 'revoked';
  const scopes = el('ul', { class: 'scope-list' }, ...(key.scopes ?? []).map((s) => el('li', { class: 'chip', text: s })));
  const status = el('span', { class: `status status-${['active', 'expired', 'revoked'].includes(key.status) ? key.status : 'unknown'}`, text: key.status ?? '—' });
  const actions = el('td', { class: 'actions', 'data-label': 'Actions' });
  if (!revoked) {
    actions.append(
      el('button', { type: 'button', class: 'btn btn-small btn-secondary', 'aria-label': `Edit ${key.name}`, text: 'Edit', onclick: (e) => { e.stopPropagation(); openEditDialog(key); } }),
      el('button', { type: 'button', class: 'btn btn-small btn-danger-outline', 'aria-label': `Revoke ${key.name}`, text: 'Revoke', onclick: (e) => { e.stopPropagation(); openRevokeDialog(key); } }),
    );
  }
  const row = el(
    'tr',
    { 'data-key-id': key.id, class: revoked ? 'row-revoked' : 'row-clickable' },
    el('td', { class: 'name', 'data-label': 'Name' }, el('span', { class: 'key-name', text: key.name ?? '' })),
    el('td', { 'data-label': 'Prefix' }, el('code', { text: key.prefix ?? '' })),
    el('td', { 'data-label': 'Scopes' }, scopes),
    el('td', { 'data-label': 'Status' }, status),
    el('td', { 'data-label': 'Created' }, timeEl(key.createdAt)),
    el('td', { 'data-label': 'Expires' }, key.expiresAt ? timeEl(key.expiresAt) : 'Never'),
    el('td', { 'data-label': 'Last used' }, key.lastUsedAt ? timeEl(key.lastUsedAt, 'relative') : 'Never'),
    actions,
  );
  if (!revoked) {
    row.addEventListener('click', (e) => {
      if (e.target.closest('button, a, input')) return;
      openEditDialog(key);
    });
  }
  return row;
}

function replaceKey(updated) {
  const k = state.keys;
  const i = k.rows.findIndex((r) => r.id === updated.id);
  if (i >= 0) k.rows[i] = updated;
  renderKeys();
}

function notice(message) {
  const n = $('keys-notice');
  n.textContent = message;
  show(n, Boolean(message));
}

function scopeCheckboxes(fieldset, prefix, selected, extra = []) {
  fieldset.querySelectorAll('.scope-option').forEach((n) => n.remove());
  const all = [...SCOPES, ...extra.filter((s) => !SCOPES.includes(s))];
  all.forEach((scope, i) => {
    const id = `${prefix}-scope-${i}`;
    fieldset.append(
      el('div', { class: 'scope-option' },
        el('input', { type: 'checkbox', id, name: 'scope', value: scope, checked: selected.includes(scope) }),
        el('label', { for: id }, el('code', { text: scope }))),
    );
  });
}

function checkedScopes(fieldset) {
  return [...fieldset.querySelectorAll('input[name="scope"]:checked')].map((i) => i.value);
}

// ---------------------------------------------------------------------------------------
// Dialogs: focus handling, Escape with the same rules as the close buttons

const dialogState = new Map(); // dialog → { returnFocus, beforeClose }

function openDialog(dialog, firstField, beforeClose) {
  dialogState.set(dialog, { returnFocus: document.activeElement, beforeClose });
  dialog.showModal();
  (firstField ?? dialog.querySelector('input, select, textarea, button'))?.focus();
}

/** Closes a dialog unless its beforeClose hook says not yet (force: no questions). */
function requestClose(dialog, force = false) {
  const s = dialogState.get(dialog);
  if (!force && s?.beforeClose && s.beforeClose() === false) return false;
  if (dialog.open) dialog.close();
  dialogState.delete(dialog);
  dialog.dispatchEvent(new Event('rl-closed'));
  const target = s?.returnFocus;
  if (target && document.contains(target) && !target.disabled) target.focus();
  else $('main').focus();
  return true;
}

function closeAllDialogs(force) {
  for (const d of document.querySelectorAll('dialog')) if (d.open) requestClose(d, force);
}

function wireDialogs() {
  for (const dialog of document.querySelectorAll('dialog')) {
    dialog.addEventListener('cancel', (e) => {
      // Escape: same confirmation rules as the Cancel / Close buttons.
      e.preventDefault();
      requestClose(dialog);
    });
    dialog.addEventListener('click', (e) => {
      if (e.target.closest('[data-close]')) requestClose(dialog);
    });
  }
  $('create-form').addEventListener('submit', submitCreate);
  $('create-form').addEventListener('input', onCreateInput);
  $('create-dialog').addEventListener('rl-closed', destroyCreateResult);
  $('edit-form').addEventListener('submit', submitEdit);
  $('edit-form').addEventListener('input', updateEditState);
  $('edit-revoke').addEventListener('click', () => {
    const key = editing;
    if (!key) return;
    requestClose($('edit-dialog'), true);
    openRevokeDialog(key);
  });
  $('revoke-form').addEventListener('submit', submitRevoke);
  $('revoke-confirm').addEventListener('input', () => {
    $('revoke-submit').disabled = revokeInFlight || $('revoke-confirm').value !== revoking?.name;
  });
  window.addEventListener('beforeunload', (e) => {
    if (showOnce && !showOnce.closed) {
      e.preventDefault();
      e.returnValue = '';
    }
  });
}

// ---------------------------------------------------------------------------------------
// Create

/** Per opened dialog: the idempotency key (reused by every retry from this dialog). */
let createAttempt = null;
/** While the show-once step is open: { closed, copied } (the plaintext is never kept here). */
let showOnce = null;

function openCreateDialog() {
  if ($('create-key').disabled) return;
  destroyCreateResult();
  createAttempt = { idempotencyKey: crypto.randomUUID(), inFlight: false, expiresAt: null };
  const form = $('create-form');
  form.reset();
  show(form, true);
  $('create-title').textContent = 'Create API key';
  scopeCheckboxes($('create-scopes'), 'create', DEFAULT_SCOPES);
  setAlert($('create-error'), '');
  $('create-submit').disabled = false;
  $('create-submit').textContent = 'Create key';
  onCreateInput();
  openDialog($('create-dialog'), $('create-name'), createBeforeClose);
}

function expiryFromDays(value) {
  if (value === '' || value === null || value === undefined) return { ok: true, expiresAt: null };
  const days = Number(value);
  if (!Number.isInteger(days) || days < 1 || days > 3650) return { ok: false };
  const d = new Date(Date.now() + days * 86_400_000);
  d.setUTCSeconds(0, 0);
  return { ok: true, expiresAt: d.toISOString() };
}

function onCreateInput(e) {
  const preview = $('create-expiry-preview');
  const input = $('create-expiry');
  if (!e || e.target === input) {
    const r = expiryFromDays(input.value.trim());
    if (!r.ok) {
      preview.textContent = 'Enter a whole number of days from 1 to 3650, or leave empty for no expiry.';
      createAttempt && (createAttempt.expiresAt = undefined);
    } else if (!r.expiresAt) {
      preview.textContent = 'Never expires. Leave empty for no expiry, or enter a number of days.';
      createAttempt && (createAttempt.expiresAt = null);
    } else {
      preview.textContent = `Expires on ${dateTimeFmt.format(new Date(r.expiresAt))} (${r.expiresAt}).`;
      createAttempt && (createAttempt.expiresAt = r.expiresAt);
    }
  }
  if (e) setAlert($('create-error'), '');
}

function createBeforeClose() {
  if (createAttempt?.inFlight) return false; // the answer decides what to show
  if (showOnce && !showOnce.closed && !showOnce.copied) {
    askCloseWithoutCopy();
    return false;
  }
  return true;
}

async function submitCreate(e) {
  e.preventDefault();
  const attempt = createAttempt;
  if (!attempt || attempt.inFlight) return;
  const submit = $('create-submit');
  const name = $('create-name').value.trim();
  const scopes = checkedScopes($('create-scopes'));
  if (!name) {
    setAlert($('create-error'), 'Enter a name for the key.');
    $('create-name').focus();
    return;
  }
  if (scopes.length === 0) {
    setAlert($('create-error'), 'Select at least one scope.');
    $('create-scopes').querySelector('input')?.focus();
    return;
  }
  if (attempt.expiresAt === undefined) {
    setAlert($('create-error'), 'Enter a whole number of days from 1 to 3650, or leave the expiry empty.');
    $('create-expiry').focus();
    return;
  }
  const body = { name, scopes };
  if (attempt.expiresAt) body.expiresAt = attempt.expiresAt;
  attempt.inFlight = true;
  submit.disabled = true;
  submit.textContent = 'Creating…';
  setAlert($('create-error'), '');
  let res;
  try {
    res = await api('POST', '/v1/api-keys', { body, headers: { 'idempotency-key': attempt.idempotencyKey } });
  } catch (err) {
    attempt.inFlight = false;
    if (attempt !== createAttempt || err.status === 401 || err.status === -1) return;
    submit.textContent = err.status === 0 ? 'Try again' : 'Create key';
    if (err.status === 403) {
      // Not allowed: say so and offer nothing that would fail again.
      setAlert($('create-error'), err.message);
      submit.disabled = true;
      setCreateAllowed(false, err.message);
      return;
    }
    setAlert($('create-error'), errorMessage(err));
    submit.disabled = false;
    return;
  }
  attempt.inFlight = false;
  if (attempt !== createAttempt) return;
  const created = res.data ?? {};
  const replayed = res.headers.get('idempotent-replayed') === 'true' || created.keyOmitted === true || typeof created.key !== 'string';
  show($('create-form'), false);
  if (replayed) showAlreadyCreated(created);
  else showSaveKey(created);
  refreshKeysAfterChange();
}

function refreshKeysAfterChange() {
  state.keys.page = 0;
  state.keys.cursors = [null];
  state.logs.loaded = false;
  loadKeys();
}

/** The show-once step. The plaintext is only in this closure and the read-only input. */
function showSaveKey(created) {
  const dialog = $('create-dialog');
  $('create-title').textContent = 'Save your API key';
  showOnce = { closed: false, copied: false };
  const session = showOnce;
  const field = el('input', { id: 'created-key', type: 'text', readOnly: true, class: 'secret', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'created-key-warning' });
  field.value = created.key;
  field.addEventListener('focus', () => field.select());
  const copyStatus = el('p', { class: 'hint', role: 'status', id: 'copy-status' });
  const copy = el('button', { type: 'button', class: 'btn btn-primary', id: 'copy-key', text: 'Copy' });
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(field.value);
      session.copied = true;
      copy.textContent = 'Copied';
      copyStatus.textContent = 'Copied to the clipboard.';
    } catch {
      field.focus();
      field.select();
      copyStatus.textContent = 'Copying was not allowed here: the key is selected, press Ctrl+C (⌘C on a Mac) to copy it.';
      session.copied = true; // the user was shown how; do not nag twice
    }
  });
  const confirmBox = el('div', { id: 'close-confirm', class: 'confirm-box', hidden: true, role: 'alertdialog', 'aria-labelledby': 'close-confirm-text' },
    el('p', { id: 'close-confirm-text', text: 'You have not copied the key. Once this dialog closes, it cannot be shown again. Close anyway?' }),
    el('div', { class: 'dialog-actions' },
      el('button', { type: 'button', class: 'btn btn-secondary', id: 'close-confirm-back', text: 'Go back', onclick: () => { confirmBox.hidden = true; copy.focus(); } }),
      el('button', { type: 'button', class: 'btn btn-danger', id: 'close-confirm-discard', text: 'Close without copying', onclick: () => { session.copied = true; requestClose(dialog, true); } })));
  const result = $('create-result');
  result.replaceChildren(
    el('p', { class: 'warning', id: 'created-key-warning', text: SHOW_ONCE_WARNING }),
    el('div', { class: 'field' },
      el('label', { for: 'created-key', text: `API key “${created.name ?? ''}”` }),
      el('div', { class: 'copy-row' }, field, copy),
      copyStatus),
    el('p', { class: 'muted' }, 'Prefix (shown from now on): ', el('code', { text: created.prefix ?? '' })),
    confirmBox,
    el('div', { class: 'dialog-actions' },
      el('button', { type: 'button', class: 'btn btn-secondary', id: 'create-done', text: 'Done', 'data-close': true })),
  );
  show(result, true);
  copy.focus();
}

function askCloseWithoutCopy() {
  const box = $('close-confirm');
  if (!box) return;
  box.hidden = false;
  $('close-confirm-back').focus();
}

/** A replayed create (same Idempotency-Key): the key exists, its secret is gone. */
function showAlreadyCreated(created) {
  const dialog = $('create-dialog');
  $('create-title').textContent = 'This key was already created';
  const result = $('create-result');
  const actions = el('div', { class: 'dialog-actions' });
  if (created.id) {
    actions.append(el('button', {
      type: 'button', class: 'btn btn-danger-outline', id: 'replayed-revoke', text: 'Revoke this key…',
      onclick: () => { requestClose(dialog, true); openRevokeDialog(created); },
    }));
  }
  actions.append(el('button', { type: 'button', class: 'btn btn-primary', text: 'Close', 'data-close': true }));
  result.replaceChildren(
    el('p', { class: 'warning', id: 'replayed-message', text: 'An earlier attempt from this dialog already created this key, so its secret cannot be shown again. If you did not save it, revoke the key and create a new one.' }),
    el('p', { class: 'muted' }, 'Key ', el('strong', { text: created.name ?? '' }), ' · prefix ', el('code', { text: created.prefix ?? '' })),
    actions,
  );
  show(result, true);
  actions.querySelector('button')?.focus();
}

/** Removes every element that held the plaintext, and forgets the attempt. */
function destroyCreateResult() {
  const field = document.getElementById('created-key');
  if (field) field.value = '';
  const result = $('create-result');
  result.replaceChildren();
  show(result, false);
  if (showOnce) showOnce.closed = true;
  showOnce = null;
  if (createAttempt && !createAttempt.inFlight) createAttempt = null;
}

// ---------------------------------------------------------------------------------------
// Edit

let editing = null;
let editInFlight = false;

function openEditDialog(key) {
  editing = key;
  $('edit-prefix').textContent = key.prefix ?? '';
  $('edit-name').value = key.name ?? '';
  scopeCheckboxes($('edit-scopes'), 'edit', key.scopes ?? [], key.scopes ?? []);
  setAlert($('edit-error'), '');
  editInFlight = false;
  updateEditState();
  openDialog($('edit-dialog'), $('edit-name'), () => !editInFlight);
}

function editChanges() {
  const changes = {};
  const name = $('edit-name').value.trim();
  if (name !== editing.name) changes.name = name;
  const scopes = checkedScopes($('edit-scopes'));
  const before = [...(editing.scopes ?? [])].sort();
  const after = [...scopes].sort();
  if (before.length !== after.length || before.some((s, i) => s !== after[i])) changes.scopes = scopes;
  return changes;
}

function updateEditState() {
  if (!editing) return;
  const submit = $('edit-submit');
  const changes = editChanges();
  const hasChanges = Object.keys(changes).length > 0;
  submit.disabled = editInFlight || !hasChanges;
  submit.textContent = editInFlight ? 'Saving…' : hasChanges ? 'Save changes' : 'No changes';
  setAlert($('edit-error'), '');
}

async function submitEdit(e) {
  e.preventDefault();
  if (!editing || editInFlight) return;
  const changes = editChanges();
  if (Object.keys(changes).length === 0) return;
  if ('name' in changes && !changes.name) {
    setAlert($('edit-error'), 'Enter a name for the key.');
    $('edit-name').focus();
    return;
  }
  if ('scopes' in changes && changes.scopes.length === 0) {
    setAlert($('edit-error'), 'Select at least one scope.');
    return;
  }
  editInFlight = true;
  updateEditState();
  const key = editing;
  try {
    const { data } = await api('PATCH', `/v1/api-keys/${encodeURIComponent(key.id)}`, { body: changes });
    editInFlight = false;
    replaceKey(data);
    notice(`Saved changes to “${data.name}”.`);
    requestClose($('edit-dialog'), true);
    editing = null;
    state.logs.loaded = false;
  } catch (err) {
    editInFlight = false;
    if (err.status === 401 || err.status === -1) return;
    updateEditState();
    setAlert($('edit-error'), errorMessage(err));
    if (err.status === 403) $('edit-submit').disabled = true;
  }
}

// ---------------------------------------------------------------------------------------
// Revoke

let revoking = null;
let revokeInFlight = false;

function openRevokeDialog(key) {
  revoking = key;
  revokeInFlight = false;
  $('revoke-name').textContent = key.name ?? '';
  $('revoke-prefix').textContent = key.prefix ?? '';
  $('revoke-confirm-label').textContent = `Type “${key.name ?? ''}” to confirm`;
  $('revoke-confirm').value = '';
  $('revoke-submit').disabled = true;
  $('revoke-submit').textContent = 'Revoke key';
  setAlert($('revoke-error'), '');
  openDialog($('revoke-dialog'), $('revoke-confirm'), () => !revokeInFlight);
}

async function submitRevoke(e) {
  e.preventDefault();
  const key = revoking;
  if (!key || revokeInFlight || $('revoke-confirm').value !== key.name) return;
  revokeInFlight = true;
  const submit = $('revoke-submit');
  submit.disabled = true;
  submit.textContent = 'Revoking…';
  try {
    const { data } = await api('DELETE', `/v1/api-keys/${encodeURIComponent(key.id)}`);
    revokeInFlight = false;
    replaceKey(data);
    if (!state.keys.rows.some((r) => r.id === data.id)) refreshKeysAfterChange();
    notice(`Revoked “${data.name}”. It can no longer authenticate requests.`);
    requestClose($('revoke-dialog'), true);
    revoking = null;
    state.logs.loaded = false;
  } catch (err) {
    revokeInFlight = false;
    if (err.status === 401 || err.status === -1) return;
    submit.textContent = 'Revoke key';
    submit.disabled = err.status === 403;
    setAlert($('revoke-error'), errorMessage(err));
  }
}

// ---------------------------------------------------------------------------------------
// Integration logs

function wireLogs() {
  $('logs-prev').addEventListener('click', () => {
    if (state.logs.page > 0) state.logs.page -= 1;
    renderLogs();
  });
  $('logs-next').addEventListener('click', () => {
    const l = state.logs;
    if ((l.page + 1) * LOGS_PAGE_SIZE < l.events.length) l.page += 1;
    renderLogs();
  });
  $('logs-older').addEventListener('click', () => loadLogs(true));
  $('logs-refresh').addEventListener('click', () => loadLogs(false));
  $('logs-filter').addEventListener('change', () => {
    state.logs.filter = $('logs-filter').value;
    loadLogs(false);
  });
}

async function loadLogs(older) {
  const l = state.logs;
  const generation = state.generation;
  const params = new URLSearchParams({ limit: String(LOGS_FETCH_LIMIT) });
  if (l.filter) params.append('eventType', l.filter);
  if (older) {
    if (!l.nextCursor) return;
    params.set('cursor', l.nextCursor);
  }
  const filter = l.filter;
  setAlert($('logs-error'), '');
  show($('logs-loading'), true);
  $('logs-older').disabled = true;
  $('logs-refresh').disabled = true;
  try {
    const { data } = await api('GET', `/v1/audit-events?${params}`);
    if (generation !== state.generation || filter !== state.logs.filter) return;
    const events = Array.isArray(data?.data) ? data.data : [];
    if (older) {
      l.events = l.events.concat(events);
      l.page = Math.floor((l.events.length - events.length) / LOGS_PAGE_SIZE);
    } else {
      l.events = events;
      l.page = 0;
    }
    l.nextCursor = typeof data?.nextCursor === 'string' ? data.nextCursor : null;
    l.loaded = true;
    renderLogs();
  } catch (err) {
    if (generation !== state.generation || err.status === -1) return;
    if (!older) {
      l.events = [];
      l.nextCursor = null;
      renderLogs(true);
    }
    if (err.status !== 401) setAlert($('logs-error'), `Could not load the logs: ${errorMessage(err)}`);
  } finally {
    if (generation === state.generation) {
      show($('logs-loading'), false);
      $('logs-older').disabled = false;
      $('logs-refresh').disabled = false;
    }
  }
}

function renderLogs(failed = false) {
  const l = state.logs;
  const total = l.events.length;
  const start = l.page * LOGS_PAGE_SIZE;
  const slice = l.events.slice(start, start + LOGS_PAGE_SIZE);
  $('logs-list').replaceChildren(...slice.map(logEntry));
  show($('logs-empty'), total === 0 && !failed);
  $('logs-empty').textContent = l.filter ? `No ${l.filter} events recorded.` : 'No activity recorded yet.';
  $('logs-prev').disabled = l.page === 0;
  $('logs-next').disabled = start + LOGS_PAGE_SIZE >= total;
  $('logs-count').textContent = total === 0 ? '' : `${start + 1}–${Math.min(start + LOGS_PAGE_SIZE, total)} of ${total}${l.nextCursor ? '+' : ''}`;
  show($('logs-prev').parentElement, total > 0);
  show($('logs-older'), Boolean(l.nextCursor));
}

function logEntry(event) {
  const message = typeof event.message === 'string' && event.message ? event.message : event.eventType ?? '';
  return el('li', { class: 'log-entry' },
    el('div', { class: 'log-meta' },
      timeEl(event.occurredAt, 'datetime'),
      el('span', { class: 'log-source', title: 'Source (actor)' }, el('span', { class: 'visually-hidden', text: 'Source: ' }), event.actor ?? ''),
      el('code', { class: 'log-type', text: event.eventType ?? '' })),
    el('p', { class: 'log-message', text: message }));
}

// ---------------------------------------------------------------------------------------
// API status

function wireStatus() {
  $('status-refresh').addEventListener('click', loadStatus);
}

let statusSeq = 0;

async function loadStatus() {
  const seq = ++statusSeq;
  const button = $('status-refresh');
  button.disabled = true;
  $('status-text').textContent = 'Checking…';
  let health = null;
  let failure = null;
  try {
    // Public and unauthenticated; a 503 still carries the JSON body.
    const res = await fetch('/health', { cache: 'no-store', headers: { accept: 'application/json' } });
    const text = await res.text();
    try {
      health = JSON.parse(text);
    } catch {
      failure = `The health check answered ${res.status} without a readable body.`;
    }
  } catch {
    failure = NETWORK_MESSAGE;
  }
  if (seq !== statusSeq) return;
  button.disabled = false;
  state.status.loaded = true;
  renderStatus(health, failure);
}

function dependencyName(key) {
  return DEPENDENCY_NAMES[key] ? `${DEPENDENCY_NAMES[key]} (${key})` : key;
}

function renderStatus(health, failure) {
  const card = $('status-card');
  const checks = health && typeof health.checks === 'object' && health.checks ? Object.entries(health.checks) : [];
  const failing = checks.filter(([, c]) => c?.status !== 'ok').map(([k]) => k);
  let level;
  let headline;
  let detail;
  if (!health || failure) {
    level = 'down';
    headline = 'Down';
    detail = failure ?? 'The health check could not be read.';
  } else if (health.status === 'ok') {
    level = 'ok';
    headline = 'Operational';
    detail = 'All dependencies are responding.';
  } else {
    level = health.status === 'down' ? 'down' : 'degraded';
    headline = level === 'down' ? 'Down' : 'Degraded';
    detail = failing.length
      ? `Not responding: ${failing.map(dependencyName).join(', ')}.`
      : 'The API reports a problem with one of its dependencies.';
  }
  card.dataset.status = level;
  $('status-text').textContent = headline;
  $('status-detail').textContent = detail;
  const lastOk = $('status-last-ok');
  lastOk.replaceChildren(health?.lastSuccessfulCheckAt ? timeEl(health.lastSuccessfulCheckAt, 'datetime') : document.createTextNode('No successful check yet'));
  const checked = $('status-checked');
  checked.replaceChildren(health?.checkedAt ? timeEl(health.checkedAt, 'datetime') : document.createTextNode('—'));
  $('status-checks').replaceChildren(
    ...checks.map(([name, c]) =>
      el('tr', { class: c?.status === 'ok' ? '' : 'check-failing' },
        el('th', { scope: 'row', text: dependencyName(name) }),
        el('td', {}, el('span', { class: `status status-${c?.status === 'ok' ? 'active' : 'revoked'}`, text: c?.status === 'ok' ? 'ok' : String(c?.status ?? 'unknown') })),
        el('td', { text: Number.isFinite(c?.latencyMs) ? `${c.latencyMs} ms` : '—' }))),
  );
}

boot();
