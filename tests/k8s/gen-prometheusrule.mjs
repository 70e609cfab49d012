// Writes deploy/k8s/base/prometheusrule.yaml: the alerting rules of
// deploy/prometheus/rules.yml (the file a plain Prometheus loads) wrapped in
// a Prometheus Operator PrometheusRule. kustomize cannot put a file's
// content into a custom resource's spec, so this one manifest is generated;
// the tests (manifests.test.mjs) fail when the committed file differs from
// what this script makes of rules.yml.
//
//   node tests/k8s/gen-prometheusrule.mjs           rewrite the file
//   node tests/k8s/gen-prometheusrule.mjs --check   exit 1 if it is stale
//
// The rules' comments are carried over with them.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Document, parseDocument } from 'yaml';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const RULES = join(ROOT, 'deploy', 'prometheus', 'rules.yml');
export const OUTPUT = join(ROOT, 'deploy', 'k8s', 'base', 'prometheusrule.yaml');

const HEADER = `\
Generated from deploy/prometheus/rules.yml by
  node tests/k8s/gen-prometheusrule.mjs
Do not edit: change rules.yml and run that again (the tests in tests/k8s
fail while this file is stale).

The label release must be the one your Prometheus selects rules by:
change it to your kube-prometheus-stack release's (kubectl get prometheus
-A -o jsonpath='{..ruleSelector}').`;

// The PrometheusRule for the text of a rules.yml, as YAML text.
export function render(rulesText) {
  const rules = parseDocument(rulesText, { prettyErrors: true });
  if (rules.errors.length) throw rules.errors[0];
  const groups = rules.get('groups', true);
  if (!groups || !Array.isArray(groups.items) || groups.items.length === 0)
    throw new Error('rules.yml has no groups');
  const doc = new Document({
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: {
      name: 'sluice',
      labels: {
        'app.kubernetes.io/name': 'sluice',
        release: 'kube-prometheus-stack',
      },
    },
    spec: {},
  });
  doc.setIn(['spec', 'groups'], groups);
  doc.commentBefore = HEADER.split('\n').map((l) => (l ? ' ' + l : '')).join('\n');
  return doc.toString({ lineWidth: 0 });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const want = render(readFileSync(RULES, 'utf8'));
  if (process.argv.includes('--check')) {
    let have = '';
    try {
      have = readFileSync(OUTPUT, 'utf8');
    } catch {}
    if (have !== want) {
      console.error(`${OUTPUT} is stale: run node tests/k8s/gen-prometheusrule.mjs`);
      process.exit(1);
    }
  } else {
    writeFileSync(OUTPUT, want);
    console.log(`wrote ${OUTPUT}`);
  }
}
