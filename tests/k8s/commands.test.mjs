// The manifests' commands really work: the sqlite overlay's Deployments,
// run as local processes exactly as their containers would run them (args
// and environment from the rendered manifests, `replicas` processes each),
// against a nats-server this test starts, push a small job through to
// completion and stop cleanly on SIGTERM.
//
// What a cluster would change is rewritten, and only that: NATS_URL points
// at the local nats-server, every volume's mountPath at a folder of its own
// under a temporary directory, and --http :8080 at a free loopback port per
// process. SLUICE_OBJECTS=2000 makes the job small. Each process runs with
// nothing but PATH and the manifest's environment, in an empty working
// directory that must still be empty at the end (the root filesystem is
// read-only in the pods).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { ROOT, bytes, httpAddr, kubectlMissing, render, resolveEnv } from './lib.mjs';

const JOB_OBJECTS = '2000';
const COMPLETE_WITHIN_MS = 60_000;
const MAX_PROCESSES_PER_DEPLOYMENT = 10;

function probePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// A port that was free a moment ago and that this run has not handed out
// yet: the kernel may offer a closed probe's port again before the process
// it went to has bound it (two mappers once got the same one).
const handedOut = new Set();
async function freePort() {
  for (;;) {
    const port = await probePort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.on('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

// Polls fn until it returns a truthy value or ms pass; returns that value
// or undefined.
async function poll(fn, ms, every = 100) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v || Date.now() >= deadline) return v;
    await sleep(every);
  }
}

async function get(port, path) {
  try {
    const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(2000) });
    return { status: r.status, body: await r.text() };
  } catch (e) {
    return { status: 0, body: String(e) };
  }
}

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

// Whether a binary is built with AddressSanitizer (its memory use is not
// the real one).
const asan = (bin) => readFileSync(bin).includes('__asan_init');

const reason = process.env.SLUICE_BIN
  ? !existsSync(process.env.SLUICE_BIN)
    ? `SLUICE_BIN=${process.env.SLUICE_BIN} does not exist`
    : kubectlMissing() ?? (which('nats-server') ? null : 'nats-server not found (apt-get install nats-server)')
  : 'SLUICE_BIN is not set (the sluice binary to run, e.g. SLUICE_BIN=$PWD/build/sluice)';

test('the sqlite overlay\'s commands run a job to completion and stop cleanly', { timeout: 150_000, skip: reason ?? false }, async (t) => {
  const bin = process.env.SLUICE_BIN;
  const objs = render(join(ROOT, 'deploy', 'k8s', 'overlays', 'sqlite'));
  const tmp = mkdtempSync(join(tmpdir(), 'sluice-k8s-run-'));
  const procs = []; // {name, child, port, log, exit: Promise<{code, signal}>}
  let ok = false;

  // Whatever happens, nothing is left running.
  const killAll = () => {
    for (const p of procs)
      if (p.child.exitCode === null && p.child.signalCode === null)
        try {
          process.kill(-p.child.pid, 'SIGKILL');
        } catch {}
  };
  process.once('exit', killAll);
  t.after(async () => {
    killAll();
    await Promise.all(procs.map((p) => p.exit));
    process.removeListener('exit', killAll);
    // SLUICE_KEEP_TMP=1 keeps it (every process's log), as in tests/*.c.
    if (!process.env.SLUICE_KEEP_TMP) rmSync(tmp, { recursive: true, force: true });
    else console.log(`kept ${tmp}${ok ? '' : ' (failed)'}`);
  });

  const start = (name, file, args, env, cwd) => {
    const log = join(tmp, `${name}.log`);
    const fd = openSync(log, 'w');
    // Its own process group, so that cleanup takes its children too.
    const child = spawn(file, args, { cwd, env, stdio: ['ignore', fd, fd], detached: true });
    closeSync(fd);
    const exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    const p = { name, child, log, exit };
    procs.push(p);
    return p;
  };
  const tail = (p, n = 15) => {
    try {
      return readFileSync(p.log, 'utf8').trimEnd().split('\n').slice(-n).map((l) => `    ${p.name} | ${l}`).join('\n');
    } catch {
      return '';
    }
  };
  const logs = () => procs.map((p) => tail(p)).join('\n');

  // nats-server on a free loopback port, polled until it accepts.
  const natsPort = await freePort();
  const nats = start('nats-server', 'nats-server', ['-a', '127.0.0.1', '-p', String(natsPort)], { PATH: process.env.PATH }, tmp);
  assert.ok(await poll(() => canConnect(natsPort), 10_000), `nats-server does not accept on ${natsPort}:\n${tail(nats)}`);
  const natsUrl = `nats://127.0.0.1:${natsPort}`;

  // Each Deployment as `replicas` processes.
  const workers = [];
  let jobEnv;
  for (const d of objs.filter((o) => o.kind === 'Deployment')) {
    const spec = d.spec.template.spec;
    assert.equal(spec.containers.length, 1, `${d.metadata.name}: one container`);
    const c = spec.containers[0];
    const { env, problems } = resolveEnv(c, objs);
    assert.deepEqual(problems, [], `${d.metadata.name}: its environment resolves`);

    // Volumes: mountPath -> a folder of this Deployment's (one claim per
    // Deployment; its replicas share it, as they would a volume).
    const mounts = (c.volumeMounts ?? [])
      .map((m) => ({ path: m.mountPath.replace(/\/$/, ''), dir: join(tmp, 'volumes', d.metadata.name, m.name) }))
      .sort((a, b) => b.path.length - a.path.length);
    for (const m of mounts) mkdirSync(m.dir, { recursive: true });
    const local = (v) => {
      for (const m of mounts) {
        const re = new RegExp(`(^|[:=])${m.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?=/|$)`);
        if (re.test(v)) return v.replace(re, `$1${m.dir}`);
      }
      return v;
    };

    const base = { PATH: process.env.PATH };
    for (const [k, v] of env) {
      assert.ok(v.value !== undefined, `${d.metadata.name}: ${k} comes from outside the manifests`);
      base[k] = local(v.value);
    }
    assert.ok(base.NATS_URL, `${d.metadata.name}: no NATS_URL`);
    base.NATS_URL = natsUrl;
    base.SLUICE_OBJECTS = JOB_OBJECTS;
    jobEnv ??= { PATH: process.env.PATH, NATS_URL: natsUrl, ...(base.SLUICE_JOB ? { SLUICE_JOB: base.SLUICE_JOB } : {}) };

    const addr = httpAddr(c, env);
    assert.equal(addr, ':8080', `${d.metadata.name}: --http`);
    const n = Math.min(d.spec.replicas ?? 1, MAX_PROCESSES_PER_DEPLOYMENT);
    for (let i = 0; i < n; i++) {
      const port = await freePort();
      const args = (c.args ?? []).map(local);
      const h = args.indexOf('--http');
      args[h + 1] = `127.0.0.1:${port}`;
      const cwd = join(tmp, 'root', `${d.metadata.name}-${i}`);
      mkdirSync(cwd, { recursive: true });
      const p = start(`${d.metadata.name}-${i}`, bin, args, { ...base }, cwd);
      Object.assign(p, { port, cwd, deployment: d, role: args[0] });
      workers.push(p);
    }
  }
  for (const w of workers) t.diagnostic(`${w.name}: sluice ${w.child.spawnargs.slice(1).join(' ')}`);
  assert.deepEqual(
    Object.fromEntries(['fetcher', 'mapper', 'saver'].map((r) => [r, workers.filter((w) => w.role === r).length])),
    { fetcher: 1, mapper: 10, saver: 1 },
  );

  // `sluice status` until it says the job is complete.
  let status = '';
  const complete = await poll(() => {
    const r = spawnSync(bin, ['status'], { env: jobEnv, encoding: 'utf8', timeout: 10_000 });
    status = r.stdout + r.stderr;
    const died = workers.find((w) => w.child.exitCode !== null || w.child.signalCode !== null);
    if (died) throw new Error(`${died.name} exited (${died.child.exitCode ?? died.child.signalCode}) mid-job:\n${logs()}`);
    return /^job \S+: complete$/m.test(r.stdout);
  }, COMPLETE_WITHIN_MS, 250);
  assert.ok(complete, `the job is not complete after ${COMPLETE_WITHIN_MS / 1000} s; sluice status says:\n${status}\n${logs()}`);
  for (const line of status.trimEnd().split('\n')) t.diagnostic(`sluice status: ${line}`);
  assert.match(status, new RegExp(`objects: ${JOB_OBJECTS} of ${JOB_OBJECTS} saved`));

  // Every process answers its probes, and stays within its memory limit.
  const checkMemory = !asan(bin);
  for (const w of workers) {
    const ready = await get(w.port, '/readyz');
    assert.equal(ready.status, 200, `${w.name} /readyz: ${ready.body}`);
    const healthy = await get(w.port, '/healthz');
    assert.equal(healthy.status, 200, `${w.name} /healthz: ${healthy.body}`);
    const metrics = await get(w.port, '/metrics');
    assert.equal(metrics.status, 200, `${w.name} /metrics`);
    assert.match(metrics.body, new RegExp(`role="${w.role}"`));
    const rss = Number(/^process_resident_memory_bytes(?:\{[^}]*\})? (\S+)$/m.exec(metrics.body)?.[1]);
    const limit = w.deployment.spec.template.spec.containers[0].resources?.limits?.memory;
    if (checkMemory && limit && rss)
      assert.ok(rss < bytes(limit), `${w.name}: ${(rss / 2 ** 20).toFixed(1)} MiB resident, over its limit ${limit}`);
    if (w.role !== 'mapper' || w.name.endsWith('-0'))
      t.diagnostic(`${w.name}: /readyz 200, ${(rss / 2 ** 20).toFixed(1)} MiB resident (limit ${limit})`);
  }

  // The state is where the volumes are.
  const vol = (deployment, ...rest) => join(tmp, 'volumes', deployment, 'data', ...rest);
  assert.ok(existsSync(vol('sluice-fetcher', 'sluice.ledger')), 'the ledger is on the fetcher\'s volume');
  assert.ok(existsSync(vol('sluice-saver', 'sluice.db')), 'the SQLite sink is on the saver\'s volume');
  if (which('sqlite3')) {
    const r = spawnSync('sqlite3', [vol('sluice-saver', 'sluice.db'), 'select count(*) from objects'], { encoding: 'utf8' });
    assert.equal(r.stdout.trim(), JOB_OBJECTS, `rows in objects: ${r.stderr}`);
  }

  // SIGTERM, as Kubernetes stops a pod: each exits 0 within its
  // terminationGracePeriodSeconds (the fetcher with --linger after a
  // complete job, the mappers and the saver whenever).
  for (const w of workers) w.child.kill('SIGTERM');
  for (const w of workers) {
    const grace = (w.deployment.spec.template.spec.terminationGracePeriodSeconds ?? 30) * 1000;
    const r = await Promise.race([w.exit, sleep(grace, null, { ref: false })]);
    assert.ok(r, `${w.name} still runs ${grace / 1000} s after SIGTERM:\n${tail(w)}`);
    assert.deepEqual(r, { code: 0, signal: null }, `${w.name} exit after SIGTERM:\n${tail(w)}`);
  }

  // Nothing was written outside the volumes.
  for (const w of workers) assert.deepEqual(readdirSync(w.cwd), [], `${w.name} wrote into its working directory`);
  ok = true;
});
