// Validates every object of a rendered manifest stream (a file, or stdin)
// against the Kubernetes OpenAPI schema shipped in the kubernetes-models
// package, offline. Prints one line per object; exits 1 if any is invalid.
//
//   kubectl kustomize deploy/k8s/overlays/cpu | node deploy/k8s/validate/validate.js
'use strict';
const fs = require('fs');
const YAML = require('yaml');

async function main() {
const text = fs.readFileSync(process.argv[2] || 0, 'utf8');
let failures = 0;
for (const doc of YAML.parseAllDocuments(text)) {
  const obj = doc.toJS();
  if (!obj) continue;
  const name = `${obj.kind}/${obj.metadata && obj.metadata.name}`;
  const [group, version] = obj.apiVersion.includes('/')
    ? obj.apiVersion.split('/')
    : [null, obj.apiVersion];
  // The package is ESM-only, one module per API group and version.
  const module = ['kubernetes-models', group, version].filter(Boolean).join('/');
  let Model;
  try {
    Model = (await import(module))[obj.kind];
    if (!Model) throw new Error('no such kind');
  } catch (e) {
    console.log(`invalid ${name}: no schema for ${obj.apiVersion} ${obj.kind}`);
    failures++;
    continue;
  }
  // kustomize's secretGenerator wraps base64 every 70 characters; the API
  // server's decoder (Go's encoding/base64) skips line breaks, the schema's
  // "byte" format does not: compare what the server would decode.
  if (obj.kind === 'Secret' && obj.data) {
    for (const key of Object.keys(obj.data)) obj.data[key] = obj.data[key].replace(/\s+/g, '');
  }
  try {
    new Model(obj).validate();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`invalid ${name}: ${e.message.replace(/\s+/g, ' ')}`);
    failures++;
  }
}
process.exit(failures ? 1 : 0);
}

main();
