// Starts the real binaries (audit-service, keys-service, health-service, demo-upstream and
// gateways) on free loopback ports with a temporary SQLite DATA_DIR and a random identity
// secret, the way deploy/local/stack.sh does. Every wait is bounded; every process started
// here is killed by stopAll() (and, as a last resort, when node exits).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

// Ports other scripts of this repository use (local stack, contract tests).
const RESERVED = [
  [8080, 8090],
  [9080, 9083],
  [18080, 19088],
];

const taken = new Set();

export async function freePort() {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const port = await new Promise((resolve, reject) => {
      const srv = net.createServer();
      srv.unref();
      srv.on('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const { port: p } = srv.address();
        srv.close(() => resolve(p));
      });
    });
    if (taken.has(port) || RESERVED.some(([a, b]) => port >= a && port <= b)) continue;
    taken.add(port);
    return port;
  }
  throw new Error('no free loopback port found');
}

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** The environment without anything an outer shell might have set for these binaries. */
function cleanEnv() {
  const env = {};
  const ours = /^(CLERK_|AUTH_|GATEWAY_|KEYS_|AUDIT_|HEALTH_|REDIS_|DATABASE_|IDENTITY_|DEMO_|DATA_DIR$|NODE_ENV$|DEFAULT_UPSTREAM_URL$|RUST_LOG$|LOG_FORMAT$)/;
  for (const [k, v] of Object.entries(process.env)) if (!ours.test(k)) env[k] = v;
  return env;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes (then throws). */
export async function waitUntil(what, fn, { timeoutMs = 10_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

export class Stack {
  constructor({ binDir }) {
    this.binDir = binDir;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rl-browser-'));
    this.dataDir = path.join(this.dir, 'data');
    fs.mkdirSync(this.dataDir);
    this.secret = randomBytes(32).toString('hex'); // 64 hex characters
    this.procs = new Map();
  }

  logPath(name) {
    return path.join(this.dir, `${name}.log`);
  }

  tail(name, lines = 30) {
    try {
      return fs.readFileSync(this.logPath(name), 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  spawn(name, binary, extraEnv) {
    const out = fs.openSync(this.logPath(name), 'a');
    const child = spawn(path.join(this.binDir, binary), [], {
      env: { ...cleanEnv(), ...this.commonEnv, ...extraEnv },
      stdio: ['ignore', out, out],
    });
    fs.closeSync(out);
    children.add(child);
    child.on('exit', () => children.delete(child));
    this.procs.set(name, child);
    return child;
  }

  async waitHttp(name, url, { timeoutMs = 20_000, okOnly = true } = {}) {
    const child = this.procs.get(name);
    await waitUntil(`${name} at ${url}`, async () => {
      if (child && child.exitCode !== null) {
        throw Object.assign(new Error(`${name} exited with ${child.exitCode}:\n${this.tail(name)}`), { fatal: true });
      }
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      return okOnly ? res.ok : true;
    }, { timeoutMs }).catch((e) => {
      throw new Error(`${e.message}\n--- ${name} log ---\n${this.tail(name)}`);
    });
  }

  async waitTcp(name, port, timeoutMs = 20_000) {
    await waitUntil(`${name} on port ${port}`, () => new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    }), { timeoutMs });
  }

  async start() {
    const p = {};
    for (const k of ['keys', 'keysAdmin', 'audit', 'auditAdmin', 'health', 'healthAdmin', 'upstream', 'gateway', 'gatewayAdmin']) {
      p[k] = await freePort();
    }
    this.ports = p;
    this.commonEnv = {
      DATA_DIR: this.dataDir,
      LOG_FORMAT: 'json',
      RUST_LOG: 'info',
      KEYS_SERVICE_URL: `http://127.0.0.1:${p.keys}`,
      AUDIT_SERVICE_URL: `http://127.0.0.1:${p.audit}`,
      HEALTH_SERVICE_URL: `http://127.0.0.1:${p.health}`,
      DEFAULT_UPSTREAM_URL: `http://127.0.0.1:${p.upstream}`,
      IDENTITY_SIGNING_SECRET: this.secret,
      SHUTDOWN_GRACE_PERIOD_MS: '1000',
      // lastUsedAt reaches the page quickly.
      GATEWAY_USAGE_FLUSH_INTERVAL_MS: '1000',
    };
    this.spawn('audit-service', 'audit-service', {
      AUDIT_LISTEN_ADDR: `127.0.0.1:${p.audit}`,
      AUDIT_ADMIN_ADDR: `127.0.0.1:${p.auditAdmin}`,
    });
    this.spawn('keys-service', 'keys-service', {
      KEYS_LISTEN_ADDR: `127.0.0.1:${p.keys}`,
      KEYS_ADMIN_ADDR: `127.0.0.1:${p.keysAdmin}`,
    });
    this.spawn('health-service', 'health-service', {
      HEALTH_LISTEN_ADDR: `127.0.0.1:${p.health}`,
      HEALTH_ADMIN_ADDR: `127.0.0.1:${p.healthAdmin}`,
      HEALTH_CACHE_TTL_MS: '500',
    });
    this.spawn('demo-upstream', 'demo-upstream', {
      DEMO_UPSTREAM_LISTEN_ADDR: `127.0.0.1:${p.upstream}`,
    });
    await this.waitHttp('audit-service', `http://127.0.0.1:${p.audit}/livez`);
    await this.waitHttp('keys-service', `http://127.0.0.1:${p.keys}/livez`);
    await this.waitHttp('health-service', `http://127.0.0.1:${p.health}/livez`);
    await this.waitTcp('demo-upstream', p.upstream);
    this.base = await this.startGateway('gateway', p.gateway, p.gatewayAdmin, {
      AUTH_DEV_BYPASS: '1',
      NODE_ENV: 'development',
    });
    return this;
  }

  /** A gateway in front of this stack's services; resolves its base URL once /health answers. */
  async startGateway(name, port, adminPort, env) {
    this.spawn(name, 'gateway', {
      GATEWAY_LISTEN_ADDR: `127.0.0.1:${port}`,
      GATEWAY_ADMIN_ADDR: `127.0.0.1:${adminPort}`,
      GATEWAY_GRACE_PERIOD_SECONDS: '0',
      GATEWAY_SHUTDOWN_TIMEOUT_SECONDS: '2',
      ...env,
    });
    const base = `http://127.0.0.1:${port}`;
    await this.waitHttp(name, `${base}/health`, { timeoutMs: 30_000 });
    return base;
  }

  /** SIGKILL one process and wait (bounded) for it to be gone. */
  async kill(name) {
    const child = this.procs.get(name);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await Promise.race([gone, sleep(5000)]);
  }

  async stopAll() {
    const all = [...this.procs.values()].filter((c) => c.exitCode === null && c.signalCode === null);
    await Promise.all(all.map(async (child) => {
      const gone = new Promise((r) => child.once('exit', r));
      try {
        child.kill('SIGTERM');
      } catch {
        return;
      }
      const exited = await Promise.race([gone.then(() => true), sleep(4000).then(() => false)]);
      if (!exited) {
        try {
          child.kill('SIGKILL');
        } catch {
          /* gone */
        }
        await Promise.race([gone, sleep(2000)]);
      }
    }));
    if (!process.env.KEEP_BROWSER_TEST_STATE) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
