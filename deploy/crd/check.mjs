// The custom resources of a rendered overlay (a JSON array of its documents, argv[2]) checked
// against the prometheus-operator API as @kubernetes-models/prometheus-operator generates it from
// the operator's Go types: its validators (types, enums, patterns: what the CRD's schema says)
// and, for strictness, its TypeScript interfaces: each resource is compiled as an object literal
// of its interface, so an unknown or misspelt field anywhere in it is an error (the API server
// would drop it silently). Prints one line per resource; exits 1 when any is refused, or when a
// custom resource has no checker here.
import { readFileSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const here = dirname(fileURLToPath(import.meta.url));
const models = {
  "monitoring.coreos.com/v1/ServiceMonitor": {
    model: ServiceMonitor,
    module: "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
    type: "IServiceMonitor",
  },
};

const docs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const custom = docs.filter((d) => !/^(v1|apps\/v1|policy\/v1|autoscaling\/v2|networking\.k8s\.io\/v1)$/.test(d.apiVersion));
let failed = 0;
const source = [];
for (const [n, doc] of custom.entries()) {
  const what = `${doc.kind}/${doc.metadata?.name} (${doc.apiVersion})`;
  const checker = models[`${doc.apiVersion}/${doc.kind}`];
  if (!checker) {
    console.log(`FAIL ${what}: no schema to check it against`);
    failed++;
    continue;
  }
  try {
    new checker.model(doc).validate();
  } catch (e) {
    console.log(`FAIL ${what}: ${e.message}`);
    failed++;
    continue;
  }
  source.push(`import type { ${checker.type} as T${n} } from "${checker.module}";`);
  source.push(`export const doc${n}: T${n} = ${JSON.stringify(doc, null, 2)};`);
  console.log(`PASS ${what}: the operator's schema (types, enums, patterns)`);
}
if (source.length > 0) {
  // Inside this folder, so the compiler finds node_modules.
  const dir = mkdtempSync(join(here, ".check-"));
  const file = join(dir, "resources.ts");
  writeFileSync(file, source.join("\n") + "\n");
  const program = ts.createProgram([file], {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    skipLibCheck: true,
  });
  const diagnostics = ts.getPreEmitDiagnostics(program).filter((d) => d.file?.fileName === file);
  for (const d of diagnostics) {
    console.log(`FAIL strict fields: ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`);
    failed++;
  }
  if (diagnostics.length === 0) {
    console.log(`PASS ${custom.length} custom resource(s): no field the API does not define`);
  }
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed === 0 ? 0 : 1);
