// deploy/k8s renders, every object is valid for its kind, and the objects
// agree with each other and with deploy/grafana and deploy/prometheus.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import { OUTPUT, RULES, render as renderRule } from './gen-prometheusrule.mjs';
import { ROOT, allProblems, byKind, externalSecrets, find, kubectlMissing, render } from './lib.mjs';

const K8S = join(ROOT, 'deploy', 'k8s');
const missing = kubectlMissing();

// Each kustomization the repository ships, with what it must render.
const VARIANTS = [
  { dir: 'base', kinds: { ConfigMap: 3, Deployment: 3, PersistentVolumeClaim: 2, PodMonitor: 1, PrometheusRule: 1 } },
  { dir: 'overlays/sqlite', kinds: { ConfigMap: 3, Deployment: 3, PersistentVolumeClaim: 2, PodMonitor: 1, PrometheusRule: 1 } },
  { dir: 'overlays/postgres', kinds: { ConfigMap: 3, Deployment: 3, PersistentVolumeClaim: 1, PodMonitor: 1, PrometheusRule: 1 } },
  {
    dir: 'overlays/keda',
    kinds: { ConfigMap: 3, Deployment: 3, PersistentVolumeClaim: 2, PodMonitor: 1, PrometheusRule: 1, ScaledObject: 1 },
  },
];

const kindCounts = (objs) => {
  const out = {};
  for (const o of objs) out[o.kind] = (out[o.kind] ?? 0) + 1;
  return out;
};

for (const v of VARIANTS) {
  describe(`deploy/k8s/${v.dir}`, { skip: missing ?? false }, () => {
    let objs;
    const rendered = () => (objs ??= render(join(K8S, v.dir)));

    test('renders with kubectl kustomize', (t) => {
      const counts = kindCounts(rendered());
      t.diagnostic(`kinds: ${JSON.stringify(counts)}`);
      assert.deepEqual(counts, v.kinds);
    });

    test('every object is valid for its kind, and consistent with the others and deploy/', async () => {
      const problems = await allProblems(rendered(), {
        root: ROOT,
        external: externalSecrets(join(K8S, v.dir)),
        image: 'sluice:latest',
      });
      assert.deepEqual(problems, []);
    });
  });
}

describe('what each variant changes', { skip: missing ?? false }, () => {
  test('sqlite: the saver writes sqlite:/data/sluice.db on its claim; the fetcher its ledger on its own', () => {
    const objs = render(join(K8S, 'overlays/sqlite'));
    const saver = find(objs, 'Deployment', 'sluice-saver');
    const c = saver.spec.template.spec.containers[0];
    assert.deepEqual(c.args, ['saver', '--sink', 'sqlite:/data/sluice.db', '--http', ':8080']);
    assert.equal(saver.spec.replicas, 1);
    const claim = (d) => d.spec.template.spec.volumes.find((x) => x.name === 'data').persistentVolumeClaim.claimName;
    assert.equal(claim(saver), 'sluice-saver-data');
    const fetcher = find(objs, 'Deployment', 'sluice-fetcher');
    assert.deepEqual(fetcher.spec.template.spec.containers[0].args, [
      'fetcher', '--linger', '--ledger', '/data/sluice.ledger', '--http', ':8080',
    ]);
    assert.equal(claim(fetcher), 'sluice-fetcher-ledger');
    const mapper = find(objs, 'Deployment', 'sluice-mapper');
    assert.equal(mapper.spec.replicas, 10);
    assert.deepEqual(mapper.spec.template.spec.containers[0].args, ['mapper', '--http', ':8080']);
    assert.equal(mapper.spec.template.spec.terminationGracePeriodSeconds, 30);
    const config = find(objs, 'ConfigMap', 'sluice-config');
    assert.deepEqual(config.data, { NATS_URL: 'nats://my-nats:4222', SLUICE_JOB: 'default' });
    assert.equal(objs.filter((o) => o.metadata.namespace).length, 0, 'the namespace is left to the user');
  });

  test('postgres: two savers, the sink from Secret sluice-postgres, no saver claim', () => {
    const objs = render(join(K8S, 'overlays/postgres'));
    const saver = find(objs, 'Deployment', 'sluice-saver');
    const spec = saver.spec.template.spec;
    const c = spec.containers[0];
    assert.equal(saver.spec.replicas, 2);
    assert.ok(!c.args.includes('--sink'), 'the sink URL must not be a flag (it would show in ps)');
    assert.deepEqual(c.env, [{ name: 'SLUICE_SINK', valueFrom: { secretKeyRef: { name: 'sluice-postgres', key: 'url' } } }]);
    assert.deepEqual(spec.volumes.find((x) => x.name === 'data'), { name: 'data', emptyDir: {} });
    assert.equal(find(objs, 'PersistentVolumeClaim', 'sluice-saver-data'), undefined);
    assert.ok(find(objs, 'PersistentVolumeClaim', 'sluice-fetcher-ledger'));
    assert.equal(byKind(objs, 'Secret').length, 0, 'the example Secret must not be rendered');
    assert.deepEqual(externalSecrets(join(K8S, 'overlays/postgres')), { 'Secret/sluice-postgres': ['url'] });
  });

  test('keda: a ScaledObject scales sluice-mapper 1..50 on the pending chunks', () => {
    const objs = render(join(K8S, 'overlays/keda'));
    const [so] = byKind(objs, 'ScaledObject');
    assert.equal(so.spec.scaleTargetRef.name, 'sluice-mapper');
    assert.equal(so.spec.minReplicaCount, 1);
    assert.equal(so.spec.maxReplicaCount, 50);
    assert.deepEqual(so.spec.triggers, [
      {
        type: 'prometheus',
        metadata: {
          serverAddress: 'http://kube-prometheus-stack-prometheus.monitoring.svc:9090',
          query: 'sum(sluice_chunks{state="pending",role="fetcher"})',
          threshold: '10',
        },
      },
    ]);
    // Everything else is the sqlite deployment's.
    const sqlite = render(join(K8S, 'overlays/sqlite'));
    assert.deepEqual(objs.filter((o) => o.kind !== 'ScaledObject'), sqlite);
  });
});

test('deploy/k8s/base/prometheusrule.yaml is what gen-prometheusrule.mjs makes of rules.yml', () => {
  const want = renderRule(readFileSync(RULES, 'utf8'));
  const have = readFileSync(OUTPUT, 'utf8');
  assert.ok(have === want, 'deploy/k8s/base/prometheusrule.yaml is stale: run node tests/k8s/gen-prometheusrule.mjs');
});
