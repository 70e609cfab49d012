// What the tests of deploy/k8s share: rendering a kustomization with
// kubectl, validating each object against its model, and the consistency
// checks, which return a list of problems (empty when all is well) so the
// tests can also show that each check catches the mistake it is for.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { parse, parseAllDocuments } from 'yaml';

import { unknownFields } from './dts-fields.mjs';

export { ROOT } from './gen-prometheusrule.mjs';

const require = createRequire(import.meta.url);

// ---- kubectl kustomize ----------------------------------------------------

// Why kubectl cannot be used (a reason to skip with), or null.
export function kubectlMissing() {
  const r = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  if (r.error) return `kubectl not found (${r.error.code}): cannot render the kustomizations`;
  if (r.status !== 0) return `kubectl version --client failed: ${r.stderr.trim()}`;
  return null;
}

// The objects `kubectl kustomize dir` renders, as plain objects.
export function render(dir) {
  const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed:\n${r.stderr}`);
  const docs = parseAllDocuments(r.stdout);
  const objects = [];
  for (const doc of docs) {
    if (doc.errors.length) throw doc.errors[0];
    const obj = doc.toJS();
    if (obj) objects.push(obj);
  }
  return objects;
}

// ---- models ---------------------------------------------------------------

// apiVersion/kind -> the module of its model. A kind not here fails the
// tests: add its model when the manifests gain one.
const MODELS = {
  'v1/ConfigMap': 'kubernetes-models/v1/ConfigMap',
  'v1/Secret': 'kubernetes-models/v1/Secret',
  'v1/Service': 'kubernetes-models/v1/Service',
  'v1/ServiceAccount': 'kubernetes-models/v1/ServiceAccount',
  'v1/PersistentVolumeClaim': 'kubernetes-models/v1/PersistentVolumeClaim',
  'apps/v1/Deployment': 'kubernetes-models/apps/v1/Deployment',
  'apps/v1/StatefulSet': 'kubernetes-models/apps/v1/StatefulSet',
  'batch/v1/Job': 'kubernetes-models/batch/v1/Job',
  'policy/v1/PodDisruptionBudget': 'kubernetes-models/policy/v1/PodDisruptionBudget',
  'monitoring.coreos.com/v1/PodMonitor': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor',
  'monitoring.coreos.com/v1/ServiceMonitor':
    '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor',
  'monitoring.coreos.com/v1/PrometheusRule':
    '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule',
  'keda.sh/v1alpha1/ScaledObject': '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject',
};

const id = (o) => `${o.kind}/${o.metadata?.name}`;

// Problems of one object against its model: unknown kind, schema errors
// (validate()), and fields its type does not have.
export async function validateObject(obj) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const mod = MODELS[key];
  if (!mod) return [`${id(obj)}: unknown kind ${key} (no model for it in tests/k8s/lib.mjs)`];
  const Model = (await import(mod))[obj.kind];
  const problems = [];
  try {
    new Model(obj).validate();
  } catch (e) {
    problems.push(`${id(obj)}: schema: ${e.message}`);
  }
  const dts = require.resolve(mod).replace(/\.js$/, '.d.ts');
  for (const path of unknownFields(obj, dts, `I${obj.kind}`)) problems.push(`${id(obj)}: unknown field ${path}`);
  return problems;
}

// ---- helpers over rendered objects -----------------------------------------

export const workloads = (objs) => objs.filter((o) => ['Deployment', 'StatefulSet', 'Job'].includes(o.kind));
export const byKind = (objs, kind) => objs.filter((o) => o.kind === kind);
export const find = (objs, kind, name) => objs.find((o) => o.kind === kind && o.metadata?.name === name);
const podSpec = (w) => w.spec?.template?.spec ?? {};
const podLabels = (w) => w.spec?.template?.metadata?.labels ?? {};
const containersOf = (w) => [...(podSpec(w).initContainers ?? []), ...(podSpec(w).containers ?? [])];

// Whether labels satisfy a LabelSelector (matchLabels and matchExpressions)
// or, for a Service, a plain map.
export function selects(selector, labels) {
  if (!selector) return false;
  const plain = !('matchLabels' in selector) && !('matchExpressions' in selector);
  const matchLabels = plain ? selector : selector.matchLabels ?? {};
  for (const [k, v] of Object.entries(matchLabels)) if (labels[k] !== v) return false;
  for (const e of (plain ? [] : selector.matchExpressions) ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const inValues = has && (e.values ?? []).includes(labels[e.key]);
    if (e.operator === 'In' && !inValues) return false;
    if (e.operator === 'NotIn' && inValues) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return Object.keys(matchLabels).length > 0 || (selector.matchExpressions ?? []).length > 0;
}

// Bytes in a Kubernetes quantity (128Mi, 1G, 512000).
export function bytes(q) {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(q));
  if (!m) throw new Error(`not a memory quantity: ${q}`);
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * (m[2] ? unit[m[2]] : 1);
}

// The value an env var of a container resolves to, from the rendered
// objects: {value} or {external: 'Secret/name key'} for a reference to an
// object that is not rendered but known to come from outside, or
// {problem}. envFrom entries and then env entries, the later winning, as
// Kubernetes does.
export function resolveEnv(container, objs, external = {}) {
  const env = new Map();
  const problems = [];
  const source = (kind, name, key, optional) => {
    const obj = find(objs, kind, name);
    if (obj) {
      const data = { ...(obj.data ?? {}), ...(obj.stringData ?? {}) };
      if (key !== undefined && !Object.hasOwn(data, key)) {
        if (!optional) problems.push(`${kind}/${name} has no key ${key}`);
        return null;
      }
      return { data, obj };
    }
    if (external[`${kind}/${name}`]) {
      const keys = external[`${kind}/${name}`];
      if (key !== undefined && !keys.includes(key)) problems.push(`${kind}/${name} (external) has no key ${key}`);
      return { external: `${kind}/${name}`, keys };
    }
    if (!optional) problems.push(`${kind}/${name} is not rendered`);
    return null;
  };
  for (const from of container.envFrom ?? []) {
    const ref = from.configMapRef ? ['ConfigMap', from.configMapRef] : ['Secret', from.secretRef];
    const s = source(ref[0], ref[1]?.name, undefined, ref[1]?.optional);
    if (!s) continue;
    const keys = s.external ? s.keys : Object.keys(s.data);
    for (const k of keys) {
      const name = (from.prefix ?? '') + k;
      if (s.external) env.set(name, { external: `${s.external} ${k}` });
      else {
        let v = s.data[k];
        if (ref[0] === 'Secret' && s.obj.data && Object.hasOwn(s.obj.data, k)) v = Buffer.from(v, 'base64').toString();
        env.set(name, { value: v });
      }
    }
  }
  for (const e of container.env ?? []) {
    if ('value' in e) env.set(e.name, { value: e.value });
    else if (e.valueFrom?.configMapKeyRef) {
      const r = e.valueFrom.configMapKeyRef;
      const s = source('ConfigMap', r.name, r.key, r.optional);
      if (s) env.set(e.name, s.external ? { external: `${s.external} ${r.key}` } : { value: s.data[r.key] });
    } else if (e.valueFrom?.secretKeyRef) {
      const r = e.valueFrom.secretKeyRef;
      const s = source('Secret', r.name, r.key, r.optional);
      if (s)
        env.set(
          e.name,
          s.external
            ? { external: `${s.external} ${r.key}` }
            : { value: s.obj.stringData?.[r.key] ?? Buffer.from(s.data[r.key], 'base64').toString() },
        );
    } else env.set(e.name, { external: 'fieldRef/resourceFieldRef' });
  }
  return { env, problems };
}

// The absolute paths a container's args and env values name, with a
// scheme prefix (sqlite:/data/x.db) taken off.
export function pathsNamed(container, env) {
  const values = [...(container.args ?? []), ...(container.command ?? [])];
  for (const v of env.values()) if (v.value !== undefined) values.push(v.value);
  const out = [];
  for (const v of values) {
    const m = /^(?:[a-z][a-z0-9+.-]*:)?(\/[^\s:]*)$/.exec(String(v).replace(/^--[\w-]+=/, ''));
    if (m && !/^[a-z]+:\/\//.test(v)) out.push(m[1]);
  }
  return out;
}

// The --http address of a container's args (or SLUICE_HTTP).
export function httpAddr(container, env) {
  const args = container.args ?? [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--http') return args[i + 1];
    if (args[i].startsWith('--http=')) return args[i].slice(7);
  }
  return env?.get('SLUICE_HTTP')?.value ?? null;
}

// ---- the consistency checks -------------------------------------------------

// Problems of a set of rendered objects. opts.root: the repository whose
// deploy/grafana and deploy/prometheus they must agree with; opts.external:
// objects referenced but deliberately not rendered, {"Secret/name": [keys]};
// opts.image: the one image every container must run.
export function checkManifests(objs, opts) {
  const { root, external = {}, image } = opts;
  const problems = [];
  const bad = (msg) => problems.push(msg);

  // Names are unique per kind.
  const seen = new Set();
  for (const o of objs) {
    if (seen.has(id(o))) bad(`${id(o)} is rendered twice`);
    seen.add(id(o));
  }

  const ws = workloads(objs);
  if (ws.length === 0) bad('no workload rendered');
  const images = new Set();
  for (const w of ws) {
    const spec = podSpec(w);
    const labels = podLabels(w);
    if (!selects(w.spec?.selector, labels)) bad(`${id(w)}: its selector does not match its own pod template`);

    // The sluice labels; the component is the role the container runs.
    const component = labels['app.kubernetes.io/component'];
    if (labels['app.kubernetes.io/name'] !== 'sluice') bad(`${id(w)}: pods not labelled app.kubernetes.io/name: sluice`);
    if (!['fetcher', 'mapper', 'saver'].includes(component))
      bad(`${id(w)}: pods labelled app.kubernetes.io/component: ${component}, not fetcher, mapper or saver`);
    else if (w.metadata.name !== `sluice-${component}`) bad(`${id(w)}: component ${component} in a Deployment of another name`);

    const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
    for (const v of volumes.values())
      if (v.persistentVolumeClaim) {
        const pvc = find(objs, 'PersistentVolumeClaim', v.persistentVolumeClaim.claimName);
        if (!pvc) bad(`${id(w)}: volume ${v.name} claims ${v.persistentVolumeClaim.claimName}, which is not rendered`);
        // A ReadWriteOnce volume is mounted by one pod at a time: one
        // replica, and the old pod gone before the new one starts.
        else if ((pvc.spec.accessModes ?? []).includes('ReadWriteOnce')) {
          if ((w.spec.replicas ?? 1) > 1) bad(`${id(w)}: ${w.spec.replicas} replicas share the ReadWriteOnce claim ${pvc.metadata.name}`);
          if (w.kind === 'Deployment' && w.spec.strategy?.type !== 'Recreate')
            bad(`${id(w)}: mounts the ReadWriteOnce claim ${pvc.metadata.name} without strategy Recreate`);
        }
      }
    if (spec.securityContext?.runAsUser === 0) bad(`${id(w)}: pod runs as root (runAsUser 0)`);

    for (const c of containersOf(w)) {
      const where = `${id(w)} container ${c.name}`;
      images.add(c.image);
      if (c.command) bad(`${where}: sets command; containers differ only in args (the image's entrypoint is sluice)`);
      if (component && c.args?.[0] !== component) bad(`${where}: args[0] is ${c.args?.[0]}, not its role ${component}`);

      // Probes name a port of this container; /healthz and /readyz.
      const ports = c.ports ?? [];
      const portOk = (p) => (typeof p === 'string' ? ports.some((x) => x.name === p) : ports.some((x) => x.containerPort === p));
      for (const [probe, path] of [['livenessProbe', '/healthz'], ['readinessProbe', '/readyz'], ['startupProbe', null]]) {
        const h = c[probe]?.httpGet;
        if (!c[probe]) {
          if (path) bad(`${where}: no ${probe}`);
          continue;
        }
        if (!h) continue;
        if (!portOk(h.port)) bad(`${where}: ${probe} port ${h.port} is no containerPort of it`);
        if (path && h.path !== path) bad(`${where}: ${probe} path ${h.path}, not ${path}`);
      }
      const http = ports.find((p) => p.name === 'http');
      if (!http) bad(`${where}: no containerPort named http`);

      // NATS_URL and every referenced ConfigMap/Secret key.
      const { env, problems: envProblems } = resolveEnv(c, objs, external);
      for (const p of envProblems) bad(`${where}: ${p}`);
      const nats = env.get('NATS_URL');
      if (!nats) bad(`${where}: gets no NATS_URL`);
      else if (nats.value !== undefined && !/^(nats|tls|wss?):\/\/\S+$/.test(nats.value))
        bad(`${where}: NATS_URL ${JSON.stringify(nats.value)} is not a NATS URL`);

      // It serves HTTP on the port named http.
      const addr = httpAddr(c, env);
      if (!addr) bad(`${where}: no --http: probes and metrics would find nothing`);
      else if (http && Number(addr.split(':').pop()) !== http.containerPort)
        bad(`${where}: --http ${addr} is not the containerPort http (${http.containerPort})`);

      // Non-root, read-only root filesystem, no privilege.
      const sc = c.securityContext ?? {};
      const nonRoot = sc.runAsNonRoot ?? spec.securityContext?.runAsNonRoot;
      const uid = sc.runAsUser ?? spec.securityContext?.runAsUser;
      if (nonRoot !== true) bad(`${where}: runAsNonRoot is not true`);
      if (!(uid > 0)) bad(`${where}: runAsUser ${uid} is not a non-root uid`);
      if (sc.readOnlyRootFilesystem !== true) bad(`${where}: readOnlyRootFilesystem is not true`);
      if (sc.allowPrivilegeEscalation !== false) bad(`${where}: allowPrivilegeEscalation is not false`);
      if (!(sc.capabilities?.drop ?? []).includes('ALL')) bad(`${where}: capabilities do not drop ALL`);
      if (sc.privileged) bad(`${where}: privileged`);

      // Resources: requests and limits of cpu and memory.
      for (const kind of ['requests', 'limits'])
        for (const r of ['cpu', 'memory']) if (!c.resources?.[kind]?.[r]) bad(`${where}: no ${kind}.${r}`);

      // Writable mounts where it writes: every path its args or env name
      // lies under a mount that is not read-only; the fetcher's ledger and
      // the saver's SQLite sink under /data.
      const mounts = c.volumeMounts ?? [];
      for (const m of mounts) if (!volumes.has(m.name)) bad(`${where}: mounts volume ${m.name}, which the pod does not have`);
      const writable = (p) =>
        mounts.some((m) => !m.readOnly && volumes.has(m.name) && (p === m.mountPath || p.startsWith(m.mountPath.replace(/\/$/, '') + '/')));
      for (const p of pathsNamed(c, env))
        if (!writable(p)) bad(`${where}: writes ${p}, which is on no writable volume (the root filesystem is read-only)`);
      if (component === 'fetcher' || component === 'saver')
        if (!writable('/data')) bad(`${where}: no writable volume at /data`);
    }
  }

  // One image for every container.
  if (images.size !== 1) bad(`containers run ${images.size} images: ${[...images].join(', ')}`);
  else if (image && !images.has(image)) bad(`containers run ${[...images][0]}, not ${image}`);

  // The fetcher: exactly one, never two at once.
  const fetcher = find(objs, 'Deployment', 'sluice-fetcher');
  if (!fetcher) bad('no Deployment sluice-fetcher');
  else {
    if (fetcher.spec.replicas !== 1) bad(`Deployment/sluice-fetcher: replicas ${fetcher.spec.replicas}, not 1`);
    if (fetcher.spec.strategy?.type !== 'Recreate') bad(`Deployment/sluice-fetcher: strategy ${fetcher.spec.strategy?.type}, not Recreate`);
  }
  for (const name of ['sluice-mapper', 'sluice-saver']) if (!find(objs, 'Deployment', name)) bad(`no Deployment ${name}`);

  // Services and PodMonitors select pods, and name ports they have.
  const podsOf = (selector) => ws.filter((w) => selects(selector, podLabels(w)));
  const hasPort = (w, port) =>
    containersOf(w).some((c) => (c.ports ?? []).some((p) => (typeof port === 'string' ? p.name === port : p.containerPort === port)));
  for (const s of byKind(objs, 'Service')) {
    const pods = podsOf(s.spec?.selector);
    if (pods.length === 0) bad(`${id(s)}: its selector matches no pod template`);
    for (const p of s.spec?.ports ?? [])
      for (const w of pods) if (!hasPort(w, p.targetPort ?? p.port)) bad(`${id(s)}: targetPort ${p.targetPort} is no containerPort of ${id(w)}`);
  }
  const podMonitors = byKind(objs, 'PodMonitor');
  if (podMonitors.length === 0) bad('no PodMonitor');
  for (const pm of podMonitors) {
    const pods = podsOf(pm.spec?.selector);
    if (pods.length === 0) bad(`${id(pm)}: its selector matches no pod template`);
    for (const w of ws) if (!pods.includes(w)) bad(`${id(pm)}: does not scrape ${id(w)}`);
    for (const ep of pm.spec?.podMetricsEndpoints ?? []) {
      if (!ep.port) bad(`${id(pm)}: an endpoint without a port name`);
      for (const w of pods) if (ep.port && !hasPort(w, ep.port)) bad(`${id(pm)}: port ${ep.port} is no containerPort of ${id(w)}`);
      if ((ep.path ?? '/metrics') !== '/metrics') bad(`${id(pm)}: path ${ep.path}, not /metrics`);
    }
    if (!pm.metadata.labels?.release) bad(`${id(pm)}: no release label (kube-prometheus-stack selects by it)`);
  }

  // KEDA scales a Deployment that is there.
  for (const so of byKind(objs, 'ScaledObject')) {
    const ref = so.spec?.scaleTargetRef ?? {};
    if ((ref.kind ?? 'Deployment') !== 'Deployment' || !find(objs, 'Deployment', ref.name))
      bad(`${id(so)}: scales ${ref.kind ?? 'Deployment'}/${ref.name}, which is not rendered`);
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    for (const t of so.spec?.triggers ?? [])
      for (const metric of (t.metadata?.query ?? '').match(/\bsluice_\w+/g) ?? [])
        if (!readme.includes('`' + metric + '`') && !readme.includes('`' + metric + '{'))
          bad(`${id(so)}: queries ${metric}, which README's Monitoring table does not list`);
  }

  // Dashboards: one ConfigMap per deploy/grafana/*.json, the same bytes.
  const dashboards = objs.filter((o) => o.kind === 'ConfigMap' && o.metadata?.labels?.grafana_dashboard === '1');
  const grafanaDir = join(root, 'deploy', 'grafana');
  const files = readdirSync(grafanaDir).filter((f) => f.endsWith('.json')).sort();
  const rendered = new Map();
  for (const cm of dashboards) {
    const keys = Object.keys(cm.data ?? {});
    if (keys.length !== 1) bad(`${id(cm)}: ${keys.length} dashboards in one ConfigMap, not 1`);
    for (const k of keys) {
      if (rendered.has(k)) bad(`${k} is in two dashboard ConfigMaps`);
      rendered.set(k, cm.data[k]);
    }
  }
  for (const f of files) {
    if (!rendered.has(f)) bad(`deploy/grafana/${f} is in no ConfigMap labelled grafana_dashboard: "1"`);
    else if (rendered.get(f) !== readFileSync(join(grafanaDir, f), 'utf8'))
      bad(`the ConfigMap of ${f} differs from deploy/grafana/${f}`);
  }
  for (const k of rendered.keys()) if (!files.includes(k)) bad(`dashboard ConfigMap key ${k} is no file of deploy/grafana`);

  // Alerts: the PrometheusRule's groups are rules.yml's.
  const rules = parse(readFileSync(join(root, 'deploy', 'prometheus', 'rules.yml'), 'utf8'));
  const prs = byKind(objs, 'PrometheusRule');
  if (prs.length !== 1) bad(`${prs.length} PrometheusRules, not 1`);
  for (const pr of prs) {
    if (!isDeepStrictEqual(pr.spec?.groups, rules.groups))
      bad(`${id(pr)}: spec.groups differ from deploy/prometheus/rules.yml (run node tests/k8s/gen-prometheusrule.mjs)`);
    if (!pr.metadata.labels?.release) bad(`${id(pr)}: no release label (kube-prometheus-stack selects by it)`);
  }
  return problems;
}

// Every object's model problems, then checkManifests's.
export async function allProblems(objs, opts) {
  const problems = [];
  for (const o of objs) problems.push(...(await validateObject(o)));
  return problems.concat(checkManifests(objs, opts));
}

// Secrets an overlay reads but does not render, from the example manifests
// beside it (secret.example.yaml): {"Secret/name": [keys]}.
export function externalSecrets(overlayDir) {
  const out = {};
  let names = [];
  try {
    names = readdirSync(overlayDir).filter((f) => /\.example\.ya?ml$/.test(f));
  } catch {}
  for (const f of names)
    for (const doc of parseAllDocuments(readFileSync(join(overlayDir, f), 'utf8'))) {
      const o = doc.toJS();
      if (o?.kind === 'Secret') out[`Secret/${o.metadata.name}`] = Object.keys({ ...o.data, ...o.stringData });
    }
  return out;
}

export const here = dirname(new URL(import.meta.url).pathname);
