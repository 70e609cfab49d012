// Unknown fields, from the models' TypeScript declarations.
//
// kubernetes-models' validate() checks types and required fields but lets
// any unknown field through (its schemas allow additional properties),
// while the API server refuses one (kubectl apply validates strictly since
// Kubernetes 1.27): `readinesProbe:` would pass validate() and fail in the
// cluster. The packages ship no JSON schema to ask, but their .d.ts files
// list every field of every type, so this reads them: a small parser for
// the part of TypeScript they use (interfaces, inline object types,
// Array<T>, unions, index signatures, imports), and a walk of an object
// along its type that reports each key the type does not have.
//
// Where a type cannot be resolved the walk stops there and checks nothing
// below (it errs on the side of no false alarm); tests/k8s checks that a
// misspelled field is caught in each kind the manifests use.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const files = new Map(); // .d.ts path -> parsed declarations

function stripComments(text) {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
}

// Finds a bare module's .d.ts from the importing file: node_modules of the
// file's folder or any folder above it.
function resolveModule(spec, fromFile) {
  const file = (base) => [base + '.d.ts', join(base, 'index.d.ts')].find((f) => existsSync(f));
  if (spec.startsWith('.')) return file(resolve(dirname(fromFile), spec)) || null;
  for (let dir = dirname(fromFile); ; dir = dirname(dir)) {
    const found = file(join(dir, 'node_modules', spec));
    if (found) return found;
    if (dirname(dir) === dir) return null;
  }
}

// Matching close brace for the open one at text[open].
function closeBrace(text, open) {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === '"' || c === "'") {
      for (i++; i < text.length && text[i] !== c; i++) if (text[i] === '\\') i++;
    } else if (c === '{') depth++;
    else if (c === '}' && --depth === 0) return i;
  }
  throw new Error('unbalanced braces');
}

function load(file) {
  if (files.has(file)) return files.get(file);
  const decl = { file, imports: new Map(), aliases: new Map(), interfaces: new Map(), types: new Map() };
  files.set(file, decl);
  if (!file || !existsSync(file)) return decl;
  const text = stripComments(readFileSync(file, 'utf8'));
  for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
    const target = resolveModule(m[2], file);
    for (const part of m[1].split(',')) {
      const [name, as] = part.trim().split(/\s+as\s+/);
      if (name) decl.imports.set((as || name).trim(), { file: target, name: name.trim() });
    }
  }
  for (const m of text.matchAll(/export\s*\{([^}]*)\}/g))
    for (const part of m[1].split(',')) {
      const [name, as] = part.trim().split(/\s+as\s+/);
      if (name && as) decl.aliases.set(as.trim(), name.trim());
    }
  for (const m of text.matchAll(/export\s+interface\s+(\w+)(?:\s+extends\s+([^{]+))?\s*\{/g)) {
    const open = m.index + m[0].length - 1;
    const body = text.slice(open, closeBrace(text, open) + 1);
    const ext = (m[2] || '').split(',').map((s) => s.trim().replace(/<.*$/, '')).filter(Boolean);
    decl.interfaces.set(m[1], { body, ext });
  }
  for (const m of text.matchAll(/export\s+declare\s+type\s+(\w+)\s*=\s*([^;]+);/g)) decl.types.set(m[1], m[2]);
  return decl;
}

// ---- a parser for TypeScript type expressions -----------------------------

function tokenize(src) {
  const out = [];
  const re = /\s+|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([A-Za-z_$][\w$.]*)|(-?\d+(?:\.\d+)?)|(=>|[{}[\]<>():;?|&,=])/gy;
  let m;
  while (re.lastIndex < src.length && (m = re.exec(src))) {
    if (m[1]) out.push({ t: 'str', v: JSON.parse(m[1].replace(/^'|'$/g, '"')) });
    else if (m[2]) out.push({ t: 'id', v: m[2] });
    else if (m[3]) out.push({ t: 'num', v: m[3] });
    else if (m[4]) out.push({ t: 'p', v: m[4] });
  }
  if (re.lastIndex < src.length) throw new Error(`cannot tokenize at: ${src.slice(re.lastIndex, re.lastIndex + 30)}`);
  return out;
}

// Type nodes: {k:'obj', props: Map(name -> type), index: type|null},
// {k:'arr', of}, {k:'union', of: []}, {k:'ref', name}, {k:'leaf'}.
function parseType(src) {
  const toks = tokenize(src);
  let i = 0;
  const peek = (v) => toks[i] && toks[i].v === v && toks[i].t === 'p';
  const eat = (v) => {
    if (!peek(v)) throw new Error(`expected ${v} at token ${i}: ${JSON.stringify(toks[i])}`);
    i++;
  };
  function type() {
    if (peek('|')) i++;
    const of = [member()];
    while (peek('|') || peek('&')) {
      i++;
      of.push(member());
    }
    return of.length === 1 ? of[0] : { k: 'union', of };
  }
  function member() {
    let t = primary();
    while (peek('[')) {
      i++;
      if (peek(']')) {
        i++;
        t = { k: 'arr', of: t };
      } else {
        type();
        eat(']');
        t = { k: 'leaf' }; // indexed access type
      }
    }
    return t;
  }
  function primary() {
    const tok = toks[i++];
    if (!tok) throw new Error('unexpected end of type');
    if (tok.t === 'p' && tok.v === '{') return object();
    if (tok.t === 'p' && tok.v === '(') {
      const t = type();
      eat(')');
      return t;
    }
    if (tok.t === 'str' || tok.t === 'num') return { k: 'leaf' };
    if (tok.t === 'id') {
      let args = [];
      if (peek('<')) {
        i++;
        args.push(type());
        while (peek(',')) {
          i++;
          args.push(type());
        }
        eat('>');
      }
      if (tok.v === 'Array' || tok.v === 'ReadonlyArray') return { k: 'arr', of: args[0] };
      if (/^(string|number|boolean|any|unknown|null|undefined|object|never|true|false|Date|Record)$/.test(tok.v))
        return { k: 'leaf' };
      return { k: 'ref', name: tok.v };
    }
    throw new Error(`unexpected token ${JSON.stringify(tok)}`);
  }
  function object() {
    const props = new Map();
    let index = null;
    while (!peek('}')) {
      if (peek('[')) {
        i++;
        i++; // key name
        eat(':');
        type();
        eat(']');
        eat(':');
        index = type();
      } else {
        const tok = toks[i++];
        const name = tok.v;
        if (peek('?')) i++;
        eat(':');
        props.set(name, type());
      }
      if (peek(';') || peek(',')) i++;
    }
    eat('}');
    return { k: 'obj', props, index };
  }
  const t = type();
  return t;
}

// The type a name stands for in a file, parsed; null when unknown.
const resolved = new Map();
function lookup(decl, name, seen = new Set()) {
  const key = decl.file + '#' + name;
  if (resolved.has(key)) return resolved.get(key);
  if (seen.has(key)) return null;
  seen.add(key);
  let t = null;
  const local = decl.aliases.get(name) || name;
  if (decl.interfaces.has(local)) {
    const { body, ext } = decl.interfaces.get(local);
    t = { ...parseType(body), decl };
    // Fields of the interfaces it extends. The models extend only
    // TypeMeta (apiVersion, kind), which they also list themselves, so one
    // that cannot be resolved adds nothing.
    for (const e of ext) {
      const base = lookup(decl, e, seen);
      if (base && base.k === 'obj') for (const [k, v] of base.props) if (!t.props.has(k)) t.props.set(k, v);
    }
  } else if (decl.types.has(local)) {
    t = { ...parseType(decl.types.get(local)), decl };
  } else if (decl.imports.has(name)) {
    const imp = decl.imports.get(name);
    t = imp.file ? lookup(load(imp.file), imp.name, seen) : null;
  }
  resolved.set(key, t);
  return t;
}

// Attaches the declaring file to every node below, so refs resolve there.
function withDecl(t, decl) {
  return t && !t.decl ? { ...t, decl } : t;
}

function walk(value, t, path, out) {
  if (!t || value === null || value === undefined) return;
  const decl = t.decl;
  switch (t.k) {
    case 'ref': {
      const r = lookup(decl, t.name);
      walk(value, r, path, out);
      return;
    }
    case 'arr':
      if (Array.isArray(value)) value.forEach((v, n) => walk(v, withDecl(t.of, decl), `${path}[${n}]`, out));
      return;
    case 'union': {
      if (typeof value !== 'object' || Array.isArray(value)) return;
      const objs = t.of.filter((m) => m.k === 'obj' || m.k === 'ref');
      if (objs.length === 1) walk(value, withDecl(objs[0], decl), path, out);
      return;
    }
    case 'obj': {
      if (typeof value !== 'object' || Array.isArray(value) || t.open) return;
      for (const [k, v] of Object.entries(value)) {
        const p = path ? `${path}.${k}` : k;
        if (t.props.has(k)) walk(v, withDecl(t.props.get(k), decl), p, out);
        else if (t.index) walk(v, withDecl(t.index, decl), p, out);
        else out.push(p);
      }
      return;
    }
    default:
  }
}

// The paths of obj's fields that its model's type does not have. dtsFile is
// the model's declaration file, iface the interface's name (IDeployment).
export function unknownFields(obj, dtsFile, iface) {
  const t = lookup(load(dtsFile), iface);
  if (!t) throw new Error(`no interface ${iface} in ${dtsFile}`);
  const out = [];
  walk(obj, t, '', out);
  return out;
}
