// The checks of manifests.test.mjs catch what they are for: each case
// breaks a copy of deploy/ in one way, renders it, and expects the problem
// it must cause. A check that can not fail would pass these manifests
// forever, whatever they become.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

import { render as renderRule } from './gen-prometheusrule.mjs';
import { ROOT, allProblems, externalSecrets, kubectlMissing, render } from './lib.mjs';

const missing = kubectlMissing();

// A copy of the repository's deploy/ (and README.md, which the checks
// read), in a temporary folder.
const tmp = mkdtempSync(join(tmpdir(), 'sluice-k8s-checks-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let copies = 0;
function copy() {
  const root = join(tmp, String(copies++));
  cpSync(join(ROOT, 'deploy'), join(root, 'deploy'), { recursive: true });
  cpSync(join(ROOT, 'README.md'), join(root, 'README.md'));
  return root;
}

// Replaces the nth (default: every) occurrence of from in a file of root.
function edit(root, file, from, to, nth) {
  const path = join(root, file);
  const text = readFileSync(path, 'utf8');
  const parts = text.split(from);
  assert.ok(parts.length > 1, `${file} has no ${JSON.stringify(from)}`);
  const out =
    nth === undefined
      ? parts.join(to)
      : parts.reduce((acc, p, i) => (i === 0 ? p : acc + (i === nth ? to : from) + p), '');
  writeFileSync(path, out);
}

async function problemsOf(root, overlay, mutate) {
  const dir = join(root, 'deploy', 'k8s', overlay);
  const objs = render(dir);
  if (mutate) mutate(objs);
  return allProblems(objs, { root, external: externalSecrets(dir), image: 'sluice:latest' });
}

const B = 'deploy/k8s/base/';
const CASES = [
  {
    name: 'two fetchers',
    change: (r) => edit(r, B + 'fetcher.yaml', 'replicas: 1', 'replicas: 2'),
    expect: [/sluice-fetcher: replicas 2, not 1/, /2 replicas share the ReadWriteOnce claim sluice-fetcher-ledger/],
  },
  {
    name: 'a rolling fetcher',
    change: (r) => edit(r, B + 'fetcher.yaml', 'type: Recreate', 'type: RollingUpdate'),
    expect: [/sluice-fetcher: strategy RollingUpdate, not Recreate/],
  },
  {
    name: 'the mapper port renamed',
    change: (r) => edit(r, B + 'mapper.yaml', '- name: http', '- name: metrics'),
    expect: [
      /sluice-mapper container mapper: livenessProbe port http is no containerPort/,
      /sluice-mapper container mapper: readinessProbe port http is no containerPort/,
      /PodMonitor\/sluice: port http is no containerPort of Deployment\/sluice-mapper/,
    ],
  },
  {
    name: 'a PodMonitor that selects nothing',
    change: (r) => edit(r, B + 'podmonitor.yaml', 'app.kubernetes.io/name: sluice', 'app.kubernetes.io/name: sluicee', 2),
    expect: [/PodMonitor\/sluice: its selector matches no pod template/],
  },
  {
    name: 'a saver without the ConfigMap',
    change: (r) => edit(r, B + 'saver.yaml', '          envFrom:\n            - configMapRef:\n                name: sluice-config\n', ''),
    expect: [/sluice-saver container saver: gets no NATS_URL/],
  },
  {
    name: 'the ConfigMap without NATS_URL',
    change: (r) => edit(r, B + 'configmap.yaml', 'NATS_URL:', 'NATS_URI:'),
    expect: [/sluice-fetcher container fetcher: gets no NATS_URL/, /sluice-mapper container mapper: gets no NATS_URL/],
  },
  {
    name: 'a ConfigMap that is not rendered',
    change: (r) => edit(r, B + 'mapper.yaml', 'name: sluice-config', 'name: sluice-konfig'),
    expect: [/sluice-mapper container mapper: ConfigMap\/sluice-konfig is not rendered/],
  },
  {
    name: 'a second image',
    change: (r) => edit(r, B + 'saver.yaml', 'image: sluice', 'image: sluice-saver'),
    expect: [/containers run 2 images/],
  },
  {
    name: 'a writable root filesystem',
    change: (r) => edit(r, B + 'mapper.yaml', 'readOnlyRootFilesystem: true', 'readOnlyRootFilesystem: false'),
    expect: [/sluice-mapper container mapper: readOnlyRootFilesystem is not true/],
  },
  {
    name: 'a root user',
    change: (r) => edit(r, B + 'saver.yaml', 'runAsUser: 10001', 'runAsUser: 0'),
    expect: [/sluice-saver container saver: runAsUser 0 is not a non-root uid/],
  },
  {
    name: 'the ledger off its volume',
    change: (r) => edit(r, B + 'fetcher.yaml', '            - name: data\n              mountPath: /data\n', ''),
    expect: [
      /sluice-fetcher container fetcher: writes \/data\/sluice.ledger, which is on no writable volume/,
      /sluice-fetcher container fetcher: no writable volume at \/data/,
    ],
  },
  {
    name: 'a read-only /data',
    change: (r) => edit(r, B + 'saver.yaml', '              mountPath: /data\n', '              mountPath: /data\n              readOnly: true\n'),
    expect: [/sluice-saver container saver: writes \/data\/sluice.db, which is on no writable volume/],
  },
  {
    name: 'a misspelled field',
    change: (r) => edit(r, B + 'mapper.yaml', 'readinessProbe:', 'readinesProbe:'),
    expect: [/Deployment\/sluice-mapper: unknown field spec.template.spec.containers\[0\].readinesProbe/, /mapper: no readinessProbe/],
  },
  {
    name: 'a value of the wrong type',
    change: (r) => edit(r, B + 'mapper.yaml', 'replicas: 10', 'replicas: "10"'),
    expect: [/Deployment\/sluice-mapper: schema: .*replicas must be integer/],
  },
  {
    name: 'an unknown kind',
    change: (r) => {
      writeFileSync(join(r, B, 'widget.yaml'), 'apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n');
      edit(r, B + 'kustomization.yaml', '  - pvc.yaml\n', '  - pvc.yaml\n  - widget.yaml\n');
    },
    expect: [/Widget\/w: unknown kind example.com\/v1\/Widget/],
  },
  {
    name: 'a claim that is not rendered',
    change: (r) => edit(r, B + 'kustomization.yaml', '  - pvc.yaml\n', ''),
    expect: [/sluice-saver: volume data claims sluice-saver-data, which is not rendered/],
  },
  {
    name: '--http on another port than the containerPort',
    change: (r) => edit(r, B + 'mapper.yaml', 'args: [mapper, --http, ":8080"]', 'args: [mapper, --http, ":9090"]'),
    expect: [/sluice-mapper container mapper: --http :9090 is not the containerPort http \(8080\)/],
  },
  {
    name: 'a dashboard left out',
    change: (r) => edit(r, 'deploy/grafana/kustomization.yaml', '  - name: sluice-dashboards-nats\n    files:\n      - nats.json\n', ''),
    expect: [/deploy\/grafana\/nats.json is in no ConfigMap/],
  },
  {
    name: 'a dashboard ConfigMap that differs from its file',
    mutate: (objs) => {
      const cm = objs.find((o) => o.metadata.name === 'sluice-dashboards-sluice');
      cm.data['sluice.json'] = cm.data['sluice.json'].replace('"sluice pipeline"', '"sluice  pipeline"');
    },
    expect: [/the ConfigMap of sluice.json differs from deploy\/grafana\/sluice.json/],
  },
  {
    name: 'rules.yml changed, the PrometheusRule not regenerated',
    change: (r) => edit(r, 'deploy/prometheus/rules.yml', 'for: 10m', 'for: 11m', 1),
    expect: [/PrometheusRule\/sluice: spec.groups differ from deploy\/prometheus\/rules.yml/],
    also: (r) =>
      assert.notEqual(
        renderRule(readFileSync(join(r, 'deploy/prometheus/rules.yml'), 'utf8')),
        readFileSync(join(r, B, 'prometheusrule.yaml'), 'utf8'),
      ),
  },
  {
    name: 'the postgres overlay reads a key its Secret does not have',
    overlay: 'overlays/postgres',
    change: (r) => edit(r, 'deploy/k8s/overlays/postgres/saver-postgres.yaml', 'key: url', 'key: uri'),
    expect: [/sluice-saver container saver: Secret\/sluice-postgres \(external\) has no key uri/],
  },
  {
    name: 'KEDA scaling a Deployment that is not there',
    overlay: 'overlays/keda',
    change: (r) => edit(r, 'deploy/k8s/components/keda/scaledobject.yaml', '    name: sluice-mapper\n', '    name: sluice-mappers\n'),
    expect: [/ScaledObject\/sluice-mapper: scales Deployment\/sluice-mappers, which is not rendered/],
  },
  {
    name: 'KEDA querying an undocumented metric',
    overlay: 'overlays/keda',
    change: (r) => edit(r, 'deploy/k8s/components/keda/scaledobject.yaml', 'sum(sluice_chunks{', 'sum(sluice_chunk{'),
    expect: [/queries sluice_chunk, which README's Monitoring table does not list/],
  },
];

describe('the checks catch a broken copy of deploy/', { skip: missing ?? false }, () => {
  for (const overlay of ['overlays/sqlite', 'overlays/postgres', 'overlays/keda'])
    test(`an unbroken copy (${overlay}) has no problem`, async () => {
      assert.deepEqual(await problemsOf(copy(), overlay), []);
    });

  for (const c of CASES)
    test(c.name, async (t) => {
      const root = copy();
      c.change?.(root);
      const problems = await problemsOf(root, c.overlay ?? 'overlays/sqlite', c.mutate);
      for (const p of problems) t.diagnostic(p);
      for (const re of c.expect)
        assert.ok(problems.some((p) => re.test(p)), `no problem matches ${re}; got:\n  ${problems.join('\n  ')}`);
      c.also?.(root);
    });
});
