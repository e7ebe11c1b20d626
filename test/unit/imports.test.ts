import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

/**
 * Arrows point down only (DESIGN.md §1): this reads the import graph of the
 * project's own files with the TypeScript parser and fails on every import that
 * points up a layer, naming the file, the import and the rule it breaks.
 */

const ROOT = resolve(__dirname, '../..');
const SCANNED = ['src', 'workflows', 'activities', 'scripts', 'bench'];

/** Layers, lowest first: a file may import its own layer and the layers below it. */
const LAYERS: { name: string; holds: string[] }[] = [
  { name: 'domain', holds: ['src/domain/'] },
  { name: 'config', holds: ['src/config.ts', 'src/logger.ts'] },
  { name: 'db', holds: ['src/db/'] },
  { name: 'ledger', holds: ['src/ledger/'] },
  { name: 'runtime', holds: ['src/jobs/', 'src/webhooks/', 'src/temporal/', 'activities/', 'workflows/'] },
  // the services the front doors share: src/services/ (the one place that starts and talks
  // to workflows and composes ledger calls), the auditor, retention (which audits before it
  // archives), the worker's wiring
  { name: 'services', holds: ['src/services/', 'src/audit', 'src/retention.ts', 'src/worker.ts'] },
  // the front doors: the HTTP API and the CLI's commands and client
  { name: 'front doors', holds: ['src/api/', 'src/cli/'] },
  // programs that drive the front doors: the dev launcher starts the API, the simulator calls it
  { name: 'programs', holds: ['src/dev/', 'src/simulate', 'src/scenario.ts'] },
  { name: 'entry', holds: ['src/cli.ts'] },
  { name: 'tools', holds: ['scripts/', 'bench/'] },
];

/** Packages a file in these places must not import: domain is pure and shared with the workflow sandbox. */
const FORBIDDEN_PACKAGES: { where: string; packages: RegExp; rule: string }[] = [
  { where: 'src/domain/', packages: /^(@temporalio\/|pg$|node:)/, rule: 'src/domain imports no Temporal, no pg and no Node built-ins (pure rules, shared with workflows)' },
  { where: 'workflows/', packages: /^(?!@temporalio\/(workflow|common)$)(?!\.)/, rule: 'workflows import only @temporalio/workflow, @temporalio/common and project files (deterministic, no I/O)' },
];

/**
 * Upward arrows not yet unwound (issue 21), each `file -> import` with why it is still
 * here. The list only shrinks: the test fails on an arrow not listed, and on an entry
 * whose arrow is gone (delete it then).
 */
const KNOWN_UPWARD: Record<string, string> = {};

type Import = { file: string; spec: string; typeOnly: boolean; line: number };

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path));
    else if (/\.(ts|js|mjs|cjs)$/.test(name) && !name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

/** Every `import … from`, `export … from`, `import x = require()`, `require()` and `import()` in a file. */
function importsOf(path: string): Import[] {
  const file = relative(ROOT, path);
  const source = ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.ES2022, true);
  const found: Import[] = [];
  const add = (node: ts.Node, literal: ts.Node | undefined, typeOnly: boolean) => {
    if (!literal || !ts.isStringLiteralLike(literal)) return;
    const line = source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
    found.push({ file, spec: literal.text, typeOnly, line });
  };
  const visit = (node: ts.Node) => {
    if (ts.isImportDeclaration(node)) {
      const clause = node.importClause;
      const bindings = clause?.namedBindings;
      const allNamedTypes = !!clause && !clause.name && !!bindings && ts.isNamedImports(bindings) && bindings.elements.length > 0 && bindings.elements.every((e) => e.isTypeOnly);
      add(node, node.moduleSpecifier, !!clause?.isTypeOnly || allNamedTypes);
    } else if (ts.isExportDeclaration(node)) {
      const allNamedTypes = !!node.exportClause && ts.isNamedExports(node.exportClause) && node.exportClause.elements.length > 0 && node.exportClause.elements.every((e) => e.isTypeOnly);
      add(node, node.moduleSpecifier, node.isTypeOnly || allNamedTypes);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      add(node, node.moduleReference.expression, node.isTypeOnly);
    } else if (ts.isCallExpression(node) && (node.expression.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(node.expression) && node.expression.text === 'require'))) {
      add(node, node.arguments[0], false);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      add(node, node.argument.literal, true);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** The project file a relative specifier names, as a path from the root. */
function resolveProjectFile(from: string, spec: string): string | undefined {
  const base = resolve(dirname(join(ROOT, from)), spec.replace(/\.js$/, ''));
  for (const candidate of [base, `${base}.ts`, `${base}.js`, join(base, 'index.ts'), join(base, 'index.js')]) {
    if (existsSync(candidate) && statSync(candidate).isFile()) return relative(ROOT, candidate);
  }
  return undefined;
}

/** `dir/` holds a folder, `file.ts` one file, and `src/name` every file of the folder whose name starts so (`src/simulate*`). */
function holds(prefix: string, file: string): boolean {
  if (prefix.endsWith('/')) return file.startsWith(prefix);
  if (prefix.endsWith('.ts')) return file === prefix;
  return file.startsWith(prefix) && !file.slice(prefix.length).includes('/');
}
const layerOf = (file: string) => LAYERS.findIndex((layer) => layer.holds.some((prefix) => holds(prefix, file)));

/** Rules beyond the order of the layers. Each returns the rule broken, if any. */
function extraRule(file: string, target: string, typeOnly: boolean): string | undefined {
  if (file === 'src/config.ts' && !target.startsWith('src/domain/')) return 'src/config.ts may import only src/domain (every layer above reads the configuration)';
  if (file.startsWith('workflows/')) {
    if (target.startsWith('workflows/') || target.startsWith('src/domain/')) return undefined;
    if (target.startsWith('activities/') && typeOnly) return undefined;
    return 'workflows import only src/domain, workflows/ and, as types only, activities/ (the workflow bundle stays deterministic)';
  }
  if (target.startsWith('test/')) return `${file.split('/')[0]}/ must not import test/ (test code serves the tests)`;
  return undefined;
}

function violations(): { arrow: string; message: string }[] {
  const found: { arrow: string; message: string }[] = [];
  const files = SCANNED.flatMap((dir) => sourceFiles(join(ROOT, dir))).map((p) => relative(ROOT, p));
  for (const file of files) {
    const from = layerOf(file);
    if (from < 0) {
      found.push({ arrow: file, message: `${file}: belongs to no layer — add it to LAYERS in test/unit/imports.test.ts` });
      continue;
    }
    for (const { spec, typeOnly, line } of importsOf(join(ROOT, file))) {
      const where = `${file}:${line} imports '${spec}'`;
      const push = (message: string) => found.push({ arrow: `${file} -> ${spec}`, message: `${where}: ${message}` });
      if (!spec.startsWith('.')) {
        for (const rule of FORBIDDEN_PACKAGES) if (file.startsWith(rule.where) && rule.packages.test(spec)) push(rule.rule);
        continue;
      }
      const target = resolveProjectFile(file, spec);
      if (target === undefined) {
        push('names no project file');
        continue;
      }
      const extra = extraRule(file, target, typeOnly);
      if (extra) {
        push(extra);
        continue;
      }
      if (target.startsWith('test/')) continue;
      const to = layerOf(target);
      if (to > from) {
        const fromLayer = LAYERS[from]!.name;
        const toLayer = to < 0 ? 'no layer' : LAYERS[to]!.name;
        push(`${fromLayer} must not import ${toLayer} (${target})`);
      }
    }
  }
  return found;
}

describe('the import graph', () => {
  test('every arrow points down: no file imports a layer above its own', () => {
    const found = violations();
    const news = found.filter((v) => !(v.arrow in KNOWN_UPWARD)).map((v) => v.message);
    const gone = Object.keys(KNOWN_UPWARD).filter((arrow) => !found.some((v) => v.arrow === arrow));
    const order = `layers, low to high: ${LAYERS.map((l) => l.name).join(' → ')}`;
    if (news.length > 0) throw new Error(`${news.length} upward import(s) (${order}):\n  ${news.join('\n  ')}`);
    if (gone.length > 0) throw new Error(`arrows gone, delete them from KNOWN_UPWARD:\n  ${gone.join('\n  ')}`);
  });

  test('the parser sees every kind of import (a self-check, so a missed form cannot pass silently)', () => {
    const specs = importsOf(join(ROOT, 'workflows/stream.ts'));
    expect(specs.some((i) => i.spec === '../activities' && i.typeOnly)).toBe(true);
    expect(specs.some((i) => i.spec === '@temporalio/workflow' && !i.typeOnly)).toBe(true);
  });
});
