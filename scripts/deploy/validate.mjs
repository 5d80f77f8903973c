// Validates rendered manifests (render.py's {"items": [...]}) offline against the
// Kubernetes, KEDA and Prometheus-operator OpenAPI schemas that the npm packages
// kubernetes-models, @kubernetes-models/keda and @kubernetes-models/prometheus-operator
// carry. A kind none of them knows is an error, never a silent pass.
// Usage: node validate.mjs RENDERED.json...
import { readFileSync } from "node:fs";

// apiVersion/kind -> the module that holds its model.
async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const candidates = [];
  if (group === "keda.sh") candidates.push(`@kubernetes-models/keda/${group}/${version}/${kind}`);
  else if (group === "monitoring.coreos.com")
    candidates.push(`@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`);
  else candidates.push(`kubernetes-models/${group ? group + "/" : ""}${version}/${kind}`);
  for (const path of candidates) {
    try {
      const mod = await import(path);
      return mod[kind] ?? mod.default;
    } catch (e) {
      if (e.code !== "ERR_MODULE_NOT_FOUND" && e.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") throw e;
    }
  }
  return null;
}

let failures = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  const { items } = JSON.parse(readFileSync(file, "utf8"));
  for (const item of items) {
    const what = `${file}: ${item.kind} ${item.metadata?.name}`;
    const Model = await modelFor(item.apiVersion ?? "", item.kind ?? "");
    if (!Model) {
      console.error(`validate: ${what}: no schema for ${item.apiVersion} ${item.kind}`);
      failures++;
      continue;
    }
    try {
      new Model(item).validate();
      checked++;
    } catch (e) {
      console.error(`validate: ${what}: ${e.message}`);
      failures++;
    }
  }
}
if (failures > 0) {
  console.error(`validate: ${failures} manifest(s) invalid`);
  process.exit(1);
}
if (checked === 0) {
  console.error("validate: nothing was checked");
  process.exit(1);
}
console.log(`validate: ${checked} manifests valid against their schemas`);
