// Real-browser end-to-end tests of /dashboard: Debian Chromium driven by playwright-core,
// against the real gateway and services (started by ./stack.mjs). Run with
// scripts/browser-test.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { createSign, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Stack, freePort, sleep, waitUntil } from './stack.mjs';

// playwright-core lives in the tool cache (NODE_PATH), not in the checkout.
const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = process.env.REPO_ROOT ?? path.resolve(HERE, '../..');
const BIN_DIR = process.env.STACK_BIN_DIR ?? path.join(ROOT, 'target/debug');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOT_DIR ?? path.join(ROOT, 'docs/screenshots');
const FIXTURES = path.join(ROOT, 'tests/fixtures');

const WARNING =
  'This key will only be shown once. Copy it now and store it securely. After closing this dialog, only the prefix is visible.';
const DESKTOP = { width: 1280, height: 800 };
const MOBILE = { width: 390, height: 844 };
const TEST_TIMEOUT = 90_000;

let stack;
let browser;
let userDataDir;

const uniqueOrg = (label) => `org_${label}_${randomBytes(4).toString('hex')}`;

/** A call to the gateway as a dev session (x-organization-id) or with a bearer credential. */
async function api(method, urlPath, { org, token, body, base = stack.base, headers = {} } = {}) {
  const h = { ...headers };
  if (org) h['x-organization-id'] = org;
  if (token) h.authorization = `Bearer ${token}`;
  if (body !== undefined) h['content-type'] = 'application/json';
  const res = await fetch(`${base}${urlPath}`, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  return { status: res.status, data, headers: res.headers };
}

async function createKeyViaApi(org, name, scopes = ['payment_intents:read']) {
  const r = await api('POST', '/v1/api-keys', { org, body: { name, scopes } });
  assert.equal(r.status, 201, JSON.stringify(r.data));
  return r.data;
}

async function listKeys(org) {
  const r = await api('GET', '/v1/api-keys?limit=100', { org });
  assert.equal(r.status, 200, JSON.stringify(r.data));
  return r.data.data;
}

/** A fresh context + page; records console output and JS dialogs. */
async function newPage({ viewport = DESKTOP, init } = {}) {
  const context = await browser.newContext({ viewport });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: stack.base });
  if (init) await context.addInitScript(init.fn, init.arg);
  const page = await context.newPage();
  page.consoleLines = [];
  page.jsDialogs = [];
  page.pageErrors = [];
  page.on('console', (m) => page.consoleLines.push(m.text()));
  page.on('pageerror', (e) => page.pageErrors.push(String(e)));
  page.on('dialog', (d) => {
    page.jsDialogs.push({ type: d.type(), message: d.message() });
    d.dismiss().catch(() => {});
  });
  page.setDefaultTimeout(15_000);
  return { context, page };
}

/** Opens the dashboard (local mode) as `org` and waits for the key list. */
async function openDashboard(page, org, { base = stack.base, tab } = {}) {
  await page.goto(`${base}/dashboard${tab ? `#${tab}` : ''}`);
  await page.locator('#local-banner').waitFor({ state: 'visible' });
  if (org) {
    await page.fill('#org-id', org);
    await page.click('#org-form button[type="submit"]');
  }
  await page.locator('#workspace').waitFor({ state: 'visible' });
  if (!tab || tab === 'keys') await waitKeysLoaded(page);
}

async function waitKeysLoaded(page) {
  await page.waitForFunction(() => {
    const loading = document.getElementById('keys-loading');
    return loading && loading.hidden && (document.querySelectorAll('#keys-body tr').length > 0 || !document.getElementById('keys-empty').hidden || !document.getElementById('keys-error').hidden);
  });
}

function rowFor(page, name) {
  return page.locator('#keys-body tr', { has: page.locator('.key-name', { hasText: name }) });
}

/** Fills and submits the create dialog; resolves the show-once step's plaintext. */
async function createKeyViaUi(page, name, { days } = {}) {
  await page.click('#create-key');
  await page.locator('#create-dialog').waitFor({ state: 'visible' });
  await page.fill('#create-name', name);
  if (days !== undefined) await page.fill('#create-expiry', String(days));
  await page.click('#create-submit');
  await page.locator('#create-title', { hasText: 'Save your API key' }).waitFor();
  return page.inputValue('#created-key');
}

async function assertNoPlaintext(page, plaintext) {
  const found = await page.evaluate((secret) => {
    const stores = [localStorage, sessionStorage];
    const where = [];
    for (const s of stores) {
      for (let i = 0; i < s.length; i += 1) {
        const k = s.key(i);
        if (k.includes(secret) || String(s.getItem(k)).includes(secret)) where.push('storage');
      }
    }
    if (location.href.includes(secret)) where.push('url');
    if (document.documentElement.outerHTML.includes(secret)) where.push('outerHTML');
    for (const input of document.querySelectorAll('input, textarea')) {
      if (input.value.includes(secret)) where.push(`input#${input.id}`);
    }
    if (document.body.innerText.includes(secret)) where.push('text');
    return where;
  }, plaintext);
  assert.deepEqual(found, [], `plaintext found in: ${found.join(', ')}`);
  assert.ok(!page.consoleLines.some((l) => l.includes(plaintext)), 'plaintext written to the console');
  assert.ok(!page.url().includes(plaintext));
}

// ---------------------------------------------------------------------------------------
// Clerk: a session token minted with the fixture key (RS256), and a stub of ClerkJS.

function b64url(x) {
  return Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
}

function mintSessionToken({ org, role = 'org:admin', permissions = [], user = 'user_browser1', sid = 'sess_browser1' }) {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: 'RS256', typ: 'JWT', kid: 'kid_clerk_a' };
  const claims = {
    sub: user,
    sid,
    azp: 'http://127.0.0.1',
    iat: now,
    nbf: now - 1,
    exp: now + 300,
    org_id: org,
    org_role: role,
    org_permissions: permissions,
  };
  const input = `${b64url(header)}.${b64url(claims)}`;
  const signer = createSign('RSA-SHA256');
  signer.update(input);
  const signature = signer.sign(fs.readFileSync(path.join(FIXTURES, 'clerk_a.key.pem'), 'utf8')).toString('base64url');
  return `${input}.${signature}`;
}

/**
 * Runs in the page before any of its scripts: a stand-in for ClerkJS's documented browser
 * API (window.Clerk), recording calls. It also wraps fetch to record the order of
 * getToken() and API calls.
 */
function clerkStub({ token, orgId, signedIn, several = false }) {
  const calls = [];
  window.__clerkCalls = calls;
  const realFetch = window.fetch.bind(window);
  window.fetch = (input, init) => {
    const url = typeof input === 'string' ? input : input.url;
    calls.push(`fetch ${url}`);
    return realFetch(input, init);
  };
  const listeners = [];
  const organization = { id: orgId, name: 'Browser Test Org', slug: 'browser-test' };
  window.Clerk = {
    loaded: false,
    async load() {
      calls.push('load');
      this.loaded = true;
    },
    user: signedIn
      ? { id: 'user_browser1', fullName: 'Browser Tester', organizationMemberships: [{ id: 'orgmem_1', role: 'org:admin', organization }].concat(several ? [{ id: 'orgmem_2', role: 'org:member', organization: { id: 'org_other', name: 'Other Org' } }] : []) }
      : null,
    session: signedIn
      ? {
          id: 'sess_browser1',
          status: 'active',
          async getToken() {
            calls.push('getToken');
            return token;
          },
        }
      : null,
    organization: signedIn ? organization : null,
    mountSignIn(el) {
      calls.push('mountSignIn');
      const p = document.createElement('p');
      p.className = 'stub-sign-in';
      p.textContent = 'Clerk sign-in (stub)';
      el.append(p);
    },
    unmountSignIn() {},
    mountOrganizationSwitcher(el) {
      calls.push('mountOrganizationSwitcher');
      el.textContent = 'org switcher (stub)';
    },
    mountUserButton(el) {
      calls.push('mountUserButton');
    },
    addListener(cb) {
      listeners.push(cb);
      return () => {};
    },
    async setActive() {},
    async signOut() {},
  };
}

// ---------------------------------------------------------------------------------------

describe('developer settings page (/dashboard) in Chromium', { timeout: 480_000 }, () => {
  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}`);
    stack = new Stack({ binDir: BIN_DIR });
    await stack.start();
    userDataDir = fs.mkdtempSync(path.join(stack.dir, 'chromium-'));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-dev-shm-usage',
      ],
    });
    fs.mkdirSync(SHOTS, { recursive: true });
  });

  after(async () => {
    try {
      if (browser) await Promise.race([browser.close(), sleep(10_000)]);
    } finally {
      if (stack) await stack.stopAll();
    }
  });

  test('create a key through the UI, then call the API with it', { timeout: TEST_TIMEOUT }, async () => {
    const org = uniqueOrg('create');
    const { context, page } = await newPage();
    try {
      await openDashboard(page, org);
      assert.match(await page.textContent('#local-banner'), /local development mode/i);
      await page.click('#create-key');
      // Focus lands on the first field; the seed's defaults are pre-selected.
      assert.equal(await page.evaluate(() => document.activeElement.id), 'create-name');
      const checked = await page.$$eval('#create-scopes input:checked', (els) => els.map((e) => e.value));
      assert.deepEqual(checked.sort(), ['payment_intents:read', 'reconciliation_cases:read']);
      assert.equal(await page.locator('#create-scopes input[type="checkbox"]').count(), 7);
      // At least one scope is required.
      await page.fill('#create-name', 'ci server');
      for (const box of await page.$$('#create-scopes input:checked')) await box.uncheck();
      await page.click('#create-submit');
      assert.match(await page.textContent('#create-error'), /at least one scope/i);
      await page.check('#create-scopes input[value="payment_intents:read"]');
      // Expiry in days, previewed as a date, sent as an absolute RFC 3339 instant.
      await page.fill('#create-expiry', '30');
      assert.match(await page.textContent('#create-expiry-preview'), /^Expires on .+\(\d{4}-\d\d-\d\dT.+Z\)\.$/);
      const postSeen = page.waitForRequest((r) => r.url().endsWith('/v1/api-keys') && r.method() === 'POST');
      await page.click('#create-submit');
      const post = await postSeen;
      const body = post.postDataJSON();
      assert.equal(body.name, 'ci server');
      assert.deepEqual(body.scopes, ['payment_intents:read']);
      const days = (Date.parse(body.expiresAt) - Date.now()) / 86_400_000;
      assert.ok(days > 29.9 && days < 30.1, `expiresAt ${body.expiresAt}`);
      assert.match(post.headers()['idempotency-key'] ?? '', /^[0-9a-f-]{36}$/);
      await page.locator('#create-title', { hasText: 'Save your API key' }).waitFor();
      const plaintext = await page.inputValue('#created-key');
      assert.match(plaintext, /^rl_live_[A-Za-z0-9_-]{43}$/);
      assert.equal(await page.getAttribute('#created-key', 'readonly'), '');
      await page.click('#copy-key');
      await page.locator('#copy-key', { hasText: 'Copied' }).waitFor();
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), plaintext);
      await page.click('#create-done');
      await page.locator('#create-dialog').waitFor({ state: 'hidden' });
      // The row: prefix, scopes, status, expiry date, never used.
      const row = rowFor(page, 'ci server');
      await row.waitFor();
      const text = await row.innerText();
      assert.ok(text.includes(plaintext.slice(0, 16)), text);
      assert.match(text, /active/);
      assert.match(text, /Never/); // last used
      // The key works from outside the browser.
      const r = await api('GET', '/v1/payment-intents', { token: plaintext });
      assert.equal(r.status, 200, JSON.stringify(r.data));
      // The demo upstream echoes the identity the gateway resolved from the key.
      assert.deepEqual(r.data.headers['x-organization-id'], [org]);
      assert.deepEqual(r.data.headers['x-auth-type'], ['api_key']);
      await assertNoPlaintext(page, plaintext);
    } finally {
      await context.close();
    }
  });

  test('show-once: the warning, confirmation before closing uncopied, nothing left behind', { timeout: TEST_TIMEOUT }, async () => {
    const org = uniqueOrg('once');
    const { context, page } = await newPage();
    try {
      await openDashboard(page, org);
      const plaintext = await createKeyViaUi(page, 'show once');
      assert.equal((await page.textContent('#created-key-warning')).trim(), WARNING);
      assert.equal(await page.evaluate(() => document.activeElement.id), 'copy-key');
      // Leaving the page while the key is shown warns (beforeunload).
      await page.close({ runBeforeUnload: true }).catch(() => {});
      await waitUntil('the beforeunload prompt', () => page.jsDialogs.some((d) => d.type === 'beforeunload'), { timeoutMs: 5000 });
      assert.ok(!page.isClosed(), 'the page closed despite the beforeunload prompt');
      // Closing without copying asks first; Escape follows the same rule.
      await page.click('#create-done');
      await page.locator('#close-confirm').waitFor({ state: 'visible' });
      assert.ok(await page.locator('#create-dialog').isVisible());
      await page.click('#close-confirm-back');
      await page.keyboard.press('Escape');
      await page.locator('#close-confirm').waitFor({ state: 'visible' });
      assert.ok(await page.locator('#create-dialog').isVisible());
      await page.click('#close-confirm-discard');
      await page.locator('#create-dialog').waitFor({ state: 'hidden' });
      // Focus returns to the button that opened the dialog.
      assert.equal(await page.evaluate(() => document.activeElement.id), 'create-key');
      await assertNoPlaintext(page, plaintext);
      // Only the prefix is shown from now on.
      assert.ok((await rowFor(page, 'show once').innerText()).includes(plaintext.slice(0, 16)));
    } finally {
      await context.close();
    }
  });

  test('a double click on Create makes exactly one key', { timeout: TEST_TIMEOUT }, async () => {
    const org = uniqueOrg('dbl');
    const { context, page } = await newPage();
    try {
      await openDashboard(page, org);
      let posts = 0;
      page.on('request', (r) => {
        if (r.method() === 'POST' && r.url().endsWith('/v1/api-keys')) posts += 1;
      });
      await page.click('#create-key');
      await page.fill('#create-name', 'double click');
      await page.dblclick('#create-submit');
      await page.locator('#create-title', { hasText: 'Save your API key' }).waitFor();
      await sleep(300);
      assert.equal(posts, 1);
      const keys = await listKeys(org);
      assert.equal(keys.length, 1, JSON.stringify(keys.map((k) => k.name)));
    } finally {
      await context.close();
    }
  });

  test('a retry after a network error reuses the Idempotency-Key; a replay shows no secret', { timeout: TEST_TIMEOUT }, async () => {
    const org = uniqueOrg('retry');
    const { context, page } = await newPage();
    try {
      await openDashboard(page, org);
      const idempotencyKeys = [];
      let first = true;
      // The first attempt reaches the server, but its answer is lost on the way back.
      await page.route('**/v1/api-keys', async (route) => {
        const req = route.request();
        if (req.method() !== 'POST') return route.continue();
        idempotencyKeys.push(req.headers()['idempotency-key']);
        if (first) {
          first = false;
          await route.fetch();
          return route.abort('connectionreset');
        }
        return route.continue();
      });
      await page.click('#create-key');
      await page.fill('#create-name', 'retried');
      await page.click('#create-submit');
      await page.locator('#create-error', { hasText: 'Could not reach the API' }).waitFor();
      assert.equal(await page.textContent('#create-submit'), 'Try again');
      await page.click('#create-submit');
      await page.locator('#create-result').waitFor({ state: 'visible' });
      assert.equal(idempotencyKeys.length, 2);
      assert.ok(idempotencyKeys[0] && idempotencyKeys[0] === idempotencyKeys[1], JSON.stringify(idempotencyKeys));
      // The server replays the first answer (Idempotent-Replayed, no plaintext): one key.
      await page.locator('#replayed-message').waitFor();
      assert.match(await page.textContent('#replayed-message'), /already created.*cannot be shown again/s);
      assert.equal(await page.locator('#created-key').count(), 0);
      assert.equal((await listKeys(org)).length, 1);
      // It offers to revoke that key.
      await page.click('#replayed-revoke');
      await page.locator('#revoke-dialog').waitFor({ state: 'visible' });
      await page.fill('#revoke-confirm', 'retried');
      await page.click('#revoke-submit');
      await page.locator('#revoke-dialog').waitFor({ state: 'hidden' });
      await rowFor(page, 'retried').locator('.status', { hasText: 'revoked' }).waitFor();
    } finally {
      await context.close();
    }
  });

  test('a replayed create answer (Idempotent-Replayed, keyOmitted) never pretends to show a secret', { timeout: TEST_TIMEOUT }, async () => {
    const org = uniqueOrg('replay');
    const existing = await createKeyViaApi(org, 'replayed key');
    const { context, page } = await newPage();
    try {
      await openDashboard(page, org);
      // What the API answers to a repeated Idempotency-Key: the first response, minus the plaintext.
      const { key: _plaintext, ...withoutKey } = existing;
      await page.route('**/v1/api-keys', (route) => {
        if (route.request().method() !== 'POST') return route.continue();
        return route.fulfill({
          status: 201,
          headers: { 'content-type': 'application/json', 'idempotent-replayed': 'true' },
          body: JSON.stringify({ ...withoutKey, keyOmitted: true }),
        });
      });
      await page.click('#create-key');
      await page.fill('#create-name', 'replayed key');
      await page.click('#create-submit');
      await page.locator('#replayed-message').waitFor();
      assert.match(await page.textContent('#create-title'), /already created/);
      assert.equal(await page.locator('#created-key').count(), 0);
      await page.click('#replayed-revoke');
      await page.locator('#revoke-dialog').waitFor({ state: 'visible' });
      assert.equal(await page.textContent('#revoke-name'), 'replayed key');
      await page.keyboard.press('Escape');
      await page.locator('#revoke-dialog').waitFor({ state: 'hidden' });
    } finally {
      await context.close();
    }
  });

  test('edit a key: name and scopes; PATCH sends only what changed', { timeout: TEST_TIMEOUT }, async () => {
    const org = uniqueOrg('edit');
    const key = await createKeyViaApi(org, 'before edit', ['payment_intents:read', 'reconciliation_cases:read']);
    const { context, page } = await newPage();
    try {
      await openDashboard(page, org);
      // Clicking the row opens the edit modal.
      await rowFor(page, 'before edit').locator('.key-name').click();
      await page.locator('#edit-dialog').waitFor({ state: 'visible' });
      assert.equal(await page.evaluate(() => document.activeElement.id), 'edit-name');
      assert.equal(await page.textContent('#edit-submit'), 'No changes');
      assert.ok(await page.isDisabled('#edit-submit'));
      await page.fill('#edit-name', 'after edit');
      await page.uncheck('#edit-scopes input[value="reconciliation_cases:read"]');
      await page.check('#edit-scopes input[value="exports:read"]');
      const patchSeen = page.waitForRequest((r) => r.method() === 'PATCH');
      await page.click('#edit-submit');
      const patch = await patchSeen;
      assert.ok(patch.url().endsWith(`/v1/api-keys/${key.id}`));
      const sent = patch.postDataJSON();
      assert.deepEqual(Object.keys(sent).sort(), ['name', 'scopes']);
      assert.equal(sent.name, 'after edit');
      assert.deepEqual([...sent.scopes].sort(), ['exports:read', 'payment_intents:read']);
      await page.locator('#edit-dialog').waitFor({ state: 'hidden' });
      const row = rowFor(page, 'after edit');
      await row.waitFor();
      assert.match(await row.innerText(), /exports:read/);
      const stored = (await listKeys(org)).find((k) => k.id === key.id);
      assert.equal(stored.name, 'after edit');
      assert.deepEqual([...stored.scopes].sort(), ['exports:read', 'payment_intents:read']);
      // A name-only change sends only the name (Edit button, keyboard).
      await row.getByRole('button', { name: 'Edit after edit' }).click();
      await page.fill('#edit-name', 'renamed only');
      const patch2Seen = page.waitForRequest((r) => r.method() === 'PATCH');
      await page.keyboard.press('Enter');
      assert.deepEqual((await patch2Seen).postDataJSON(), { name: 'renamed only' });
      await rowFor(page, 'renamed only').waitFor();
    } finally {
      await context.close();
    }
  });

  test('revoke by typing the name: the row shows revoked and the key is refused', { timeout: TEST_TIMEOUT }, async () => {
    const org = uniqueOrg('revoke');
    const key = await createKeyViaApi(org, 'to revoke');
    assert.equal((await api('GET', '/v1/payment-intents', { token: key.key })).status, 200);
    const { context, page } = await newPage();
    try {
      await openDashboard(page, org);
      const row = rowFor(page, 'to revoke');
      // lastUsedAt arrives in batches from the gateway; the page shows it relatively.
      await row.getByRole('button', { name: 'Revoke to revoke' }).click();
      await page.locator('#revoke-dialog').waitFor({ state: 'visible' });
      assert.equal(await page.evaluate(() => document.activeElement.id), 'revoke-confirm');
      assert.ok(await page.isDisabled('#revoke-submit'));
      await page.fill('#revoke-confirm', 'to revok');
      assert.ok(await page.isDisabled('#revoke-submit'));
      await page.fill('#revoke-confirm', 'to revoke');
      assert.ok(await page.isEnabled('#revoke-submit'));
      const del = page.waitForRequest((r) => r.method() === 'DELETE');
      await page.click('#revoke-submit');
      assert.ok((await del).url().endsWith(`/v1/api-keys/${key.id}`));
      await page.locator('#revoke-dialog').waitFor({ state: 'hidden' });
      await row.locator('.status', { hasText: 'revoked' }).waitFor();
      assert.equal(await row.getByRole('button').count(), 0, 'a revoked key offers no actions');
      await waitUntil('the revoked key to be refused', async () => (await api('GET', '/v1/payment-intents', { token: key.key })).status === 401, { timeoutMs: 10_000 });
      const r = await api('GET', '/v1/payment-intents', { token: key.key });
      assert.equal(r.data.message, 'Invalid, revoked, or expired API key.');
    } finally {
      await context.close();
    }
  });

  test('a key named like markup renders as text', { timeout: TEST_TIMEOUT }, async () => {
    const org = uniqueOrg('xss');
    const name = '<img src=x onerror=alert(1)>';
    await createKeyViaApi(org, name);
    const { context, page } = await newPage();
    try {
      await openDashboard(page, org);
      const row = rowFor(page, name);
      await row.waitFor();
      assert.equal(await row.locator('.key-name').textContent(), name);
      // In every place the name is shown: the edit and revoke dialogs, and the logs.
      await row.getByRole('button', { name: `Revoke ${name}` }).click();
      assert.equal(await page.textContent('#revoke-name'), name);
      await page.keyboard.press('Escape');
      await page.locator('#revoke-dialog').waitFor({ state: 'hidden' });
      await waitUntil('the created event', async () => (await api('GET', '/v1/audit-events?limit=100', { org })).data?.data?.length >= 1);
      await page.click('#tab-logs');
      await page.locator('#logs-list li').first().waitFor();
      assert.ok((await page.textContent('#logs-list')).includes(name));
      await sleep(500);
      assert.equal(await page.locator('img').count(), 0);
      assert.equal(await page.evaluate(() => document.querySelectorAll('img').length), 0);
      assert.deepEqual(page.jsDialogs, []);
      assert.deepEqual(page.pageErrors, []);
    } finally {
      await context.close();
    }
  });

  test('integration logs: twelve events make three pages, two on the last', { timeout: TEST_TIMEOUT }, async () => {
    const org = uniqueOrg('logs');
    for (let i = 1; i <= 4; i += 1) {
      const key = await createKeyViaApi(org, `logs key ${i}`);
      assert.equal((await api('PATCH', `/v1/api-keys/${key.id}`, { org, body: { name: `logs key ${i} renamed` } })).status, 200);
      assert.equal((await api('DELETE', `/v1/api-keys/${key.id}`, { org })).status, 200);
    }
    // The events travel through keys-service's outbox: wait until all twelve arrived.
    await waitUntil('12 audit events', async () => (await api('GET', '/v1/audit-events?limit=100', { org })).data?.data?.length === 12, { timeoutMs: 30_000, intervalMs: 250 });
    const { context, page } = await newPage();
    try {
      await openDashboard(page, org);
      // Keyboard: arrow keys move between tabs.
      await page.focus('#tab-keys');
      await page.keyboard.press('ArrowRight');
      assert.equal(await page.getAttribute('#tab-logs', 'aria-selected'), 'true');
      assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-logs');
      assert.ok(await page.isVisible('#panel-logs'));
      await page.locator('#logs-list li').first().waitFor();
      const entries = page.locator('#logs-list li');
      assert.equal(await entries.count(), 5);
      assert.equal(await page.textContent('#logs-count'), '1–5 of 12');
      assert.ok(await page.isDisabled('#logs-prev'));
      // Each entry: local time with the exact instant as its title, the actor as source, the message.
      const first = entries.first();
      const iso = await first.locator('time').getAttribute('title');
      assert.match(iso, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.match(await first.locator('.log-source').innerText(), /user_dev/);
      assert.match(await first.locator('.log-message').innerText(), /API key "logs key 4 renamed" \(rl_live_.{8}\) revoked/);
      await page.click('#logs-next');
      assert.equal(await page.textContent('#logs-count'), '6–10 of 12');
      assert.equal(await entries.count(), 5);
      await page.click('#logs-next');
      assert.equal(await page.textContent('#logs-count'), '11–12 of 12');
      assert.equal(await entries.count(), 2);
      assert.ok(await page.isDisabled('#logs-next'));
      await page.click('#logs-prev');
      assert.equal(await page.textContent('#logs-count'), '6–10 of 12');
      assert.ok(await page.isHidden('#logs-older'), 'no older page exists');
      // The event-type filter asks the API (eventType=…).
      const filtered = page.waitForRequest((r) => r.url().includes('eventType=api_key.revoked'));
      await page.selectOption('#logs-filter', 'api_key.revoked');
      await filtered;
      await page.locator('#logs-count', { hasText: '1–4 of 4' }).waitFor();
      // An organization without events: the empty state.
      await page.fill('#org-id', uniqueOrg('empty'));
      await page.click('#org-form button[type="submit"]');
      await page.selectOption('#logs-filter', '');
      await page.locator('#logs-empty').waitFor({ state: 'visible' });
      assert.equal(await entries.count(), 0);
    } finally {
      await context.close();
    }
  });

  test('screenshots of every tab, desktop and mobile', { timeout: TEST_TIMEOUT }, async () => {
    const org = uniqueOrg('shots');
    const k1 = await createKeyViaApi(org, 'Production server', ['payment_intents:read', 'reconciliation_cases:read']);
    await createKeyViaApi(org, 'Nightly export job', ['exports:read', 'imports:read']);
    const k3 = await createKeyViaApi(org, 'Old integration', ['payment_intents:write']);
    await api('GET', '/v1/payment-intents', { token: k1.key });
    await api('PATCH', `/v1/api-keys/${k1.id}`, { org, body: { scopes: ['payment_intents:read', 'reconciliation_cases:read', 'imports:read'] } });
    await api('DELETE', `/v1/api-keys/${k3.id}`, { org });
    await waitUntil('5 audit events', async () => (await api('GET', '/v1/audit-events?limit=100', { org })).data?.data?.length >= 5, { timeoutMs: 30_000, intervalMs: 250 });
    // lastUsedAt is flushed by the gateway in batches (1 s here).
    await waitUntil('lastUsedAt', async () => (await listKeys(org)).find((k) => k.id === k1.id)?.lastUsedAt, { timeoutMs: 15_000, intervalMs: 250 });
    for (const [label, viewport] of [['1280', DESKTOP], ['390', MOBILE]]) {
      const { context, page } = await newPage({ viewport });
      try {
        await openDashboard(page, org);
        await rowFor(page, 'Production server').waitFor();
        await page.screenshot({ path: path.join(SHOTS, `api-keys-${label}.png`), fullPage: true });
        await page.click('#tab-logs');
        await page.locator('#logs-list li').first().waitFor();
        await page.screenshot({ path: path.join(SHOTS, `integration-logs-${label}.png`), fullPage: true });
        await page.click('#tab-status');
        await page.locator('#status-text', { hasText: 'Operational' }).waitFor();
        await page.screenshot({ path: path.join(SHOTS, `api-status-${label}.png`), fullPage: true });
        // Nothing wider than the viewport.
        for (const tab of ['keys', 'logs', 'status']) {
          await page.click(`#tab-${tab}`);
          const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
          assert.ok(overflow <= 0, `${tab} overflows by ${overflow}px at ${label}px`);
        }
      } finally {
        await context.close();
      }
    }
    for (const f of ['api-keys', 'integration-logs', 'api-status']) {
      for (const w of ['1280', '390']) assert.ok(fs.statSync(path.join(SHOTS, `${f}-${w}.png`)).size > 5000);
    }
  });

  test('Clerk mode: a session from ClerkJS, a fresh token before every API call', { timeout: TEST_TIMEOUT }, async () => {
    const orgId = uniqueOrg('clerk');
    await createKeyViaApi(orgId, 'made for the session');
    const port = await freePort();
    const adminPort = await freePort();
    const publishable = `pk_test_${Buffer.from('clerk.test.invalid$').toString('base64')}`;
    const base = await stack.startGateway('clerk-gateway', port, adminPort, {
      NODE_ENV: 'production',
      CLERK_JWT_KEY: fs.readFileSync(path.join(FIXTURES, 'clerk_a.pub.pem'), 'utf8'),
      CLERK_PUBLISHABLE_KEY: publishable,
    });
    const config = (await api('GET', '/dashboard/config.json', { base })).data;
    assert.equal(config.mode, 'clerk');
    assert.equal(config.clerkFrontendApi, 'https://clerk.test.invalid');
    // Without a session, the API refuses; with the minted one it answers.
    assert.equal((await api('GET', '/v1/api-keys', { base, org: orgId })).status, 401);
    const token = mintSessionToken({ org: orgId });
    assert.equal((await api('GET', '/v1/api-keys', { base, token })).status, 200);

    const context = await browser.newContext({ viewport: DESKTOP });
    try {
      await context.addInitScript(clerkStub, { token, orgId, signedIn: true, several: true });
      const page = await context.newPage();
      page.setDefaultTimeout(15_000);
      const auth = [];
      page.on('request', (r) => {
        if (new URL(r.url()).pathname.startsWith('/v1/')) auth.push(r.headers().authorization);
      });
      await page.goto(`${base}/dashboard`);
      await rowFor(page, 'made for the session').waitFor();
      assert.ok(await page.isHidden('#local-banner'));
      assert.ok(auth.length >= 1 && auth.every((a) => a === `Bearer ${token}`), JSON.stringify(auth));
      // Creating through the session works too, and every API call came right after getToken().
      await page.click('#tab-logs');
      await page.locator('#logs-list li').first().waitFor();
      const calls = await page.evaluate(() => window.__clerkCalls);
      const firstApi = calls.findIndex((c) => c.startsWith('fetch /v1/'));
      assert.ok(calls.indexOf('load') >= 0 && calls.indexOf('load') < firstApi, JSON.stringify(calls));
      const apiCalls = calls.map((c, i) => [c, i]).filter(([c]) => c.startsWith('fetch /v1/'));
      assert.ok(apiCalls.length >= 2, JSON.stringify(calls));
      for (const [c, i] of apiCalls) assert.equal(calls[i - 1], 'getToken', `${c} without a fresh token: ${JSON.stringify(calls)}`);
      assert.ok(!calls.some((c) => c.includes('clerk.test.invalid')), 'ClerkJS was fetched although window.Clerk existed');
      // A user in several organizations gets Clerk's organization switcher.
      assert.ok(calls.includes('mountOrganizationSwitcher'), JSON.stringify(calls));
      assert.ok(await page.isVisible('#org-switcher'));
      await page.close();

      // A member without api_keys_manage: the API's 403 message, and no create button to press.
      const memberToken = mintSessionToken({ org: orgId, role: 'org:member', permissions: [], user: 'user_member1', sid: 'sess_member1' });
      const member = await browser.newContext({ viewport: DESKTOP });
      await member.addInitScript(clerkStub, { token: memberToken, orgId, signedIn: true });
      const mpage = await member.newPage();
      mpage.setDefaultTimeout(15_000);
      await mpage.goto(`${base}/dashboard`);
      await mpage.locator('#keys-error', { hasText: 'api_keys_manage' }).waitFor();
      assert.ok(await mpage.isDisabled('#create-key'));
      await member.close();

      // Signed out: Clerk's sign-in is mounted.
      const out = await browser.newContext({ viewport: DESKTOP });
      await out.addInitScript(clerkStub, { token: null, orgId, signedIn: false });
      const opage = await out.newPage();
      opage.setDefaultTimeout(15_000);
      await opage.goto(`${base}/dashboard`);
      await opage.locator('#signed-out').waitFor({ state: 'visible' });
      await opage.locator('.stub-sign-in').waitFor();
      assert.ok(await opage.isHidden('#workspace'));
      await out.close();
    } finally {
      await context.close();
      await stack.kill('clerk-gateway');
    }
  });

  test('API status: audit-service stopped shows Degraded naming it', { timeout: TEST_TIMEOUT }, async () => {
    const { context, page } = await newPage();
    try {
      await openDashboard(page, null, { tab: 'status' });
      await page.locator('#status-text', { hasText: 'Operational' }).waitFor();
      assert.match(await page.textContent('#panel-status'), /live status/i);
      assert.match(await page.textContent('#panel-status'), /not a history/i);
      assert.match(await page.locator('#status-last-ok time').getAttribute('title'), /Z$/);
      await stack.kill('audit-service');
      await waitUntil('Degraded', async () => {
        await page.click('#status-refresh');
        await page.locator('#status-refresh:not([disabled])').waitFor();
        return (await page.textContent('#status-text')) === 'Degraded';
      }, { timeoutMs: 20_000, intervalMs: 500 });
      assert.match(await page.textContent('#status-detail'), /Audit service \(audit_service\)/);
      assert.ok(await page.locator('#status-checks tr.check-failing', { hasText: 'audit_service' }).isVisible());
      assert.match(await page.textContent('#status-last-ok'), /\d/);
      // The logs tab says what went wrong instead of an empty list.
      await page.click('#tab-logs');
      await page.locator('#logs-error').waitFor({ state: 'visible' });
      assert.ok(await page.isHidden('#logs-empty'));
    } finally {
      await context.close();
    }
  });
});
