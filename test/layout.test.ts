// The source tree keeps each variant's knowledge in its own folder (docs/variants.md, issue 9):
// a variant's name, as a string literal, appears only in src/sae/<name>/ and the registry; a
// parameter only some variants have appears only in variant folders, never in the generic code
// (the loop, checkpoints, exchange, config, CLI). And the layers import one way.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { VARIANTS } from "../src/sae/index.ts";

const SRC = path.join(import.meta.dirname, "..", "src");
const COMMON = new Set(["W_enc", "b_enc", "W_dec", "b_dec"]);

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const p = path.join(dir, d.name);
    return d.isDirectory() ? sources(p) : p.endsWith(".ts") ? [p] : [];
  });
}

/** string literals of the file that are exactly `word` ("word", 'word' or `word`), as line numbers */
function literalLines(text: string, word: string): number[] {
  const re = new RegExp(`(["'\`])${word}\\1`);
  return text.split("\n").flatMap((line, i) => (re.test(line) ? [i + 1] : []));
}

const files = sources(SRC).map((f) => ({ rel: path.relative(SRC, f), text: fs.readFileSync(f, "utf8") }));
const variantFolder = (rel: string) => /^sae\/([^/]+)\//.exec(rel)?.[1] ?? null;

test("a variant's name appears only in its own folder and the registry", () => {
  const found: string[] = [];
  for (const v of VARIANTS) {
    for (const f of files) {
      if (variantFolder(f.rel) === v.name || f.rel === "sae/index.ts") continue;
      for (const line of literalLines(f.text, v.name)) found.push(`src/${f.rel}:${line}: "${v.name}"`);
    }
  }
  assert.equal(VARIANTS.length >= 7, true);
  assert.deepEqual(found, [], `variant names outside their folders:\n${found.join("\n")}`);
});

test("parameters that only some variants have appear only in variant folders", () => {
  const owned = new Set<string>();
  for (const v of VARIANTS) {
    const base = { variant: v.name, d_sae: 4, expansion_factor: 1, flavour: v.flavours?.[0], apply_b_dec_to_input: true, b_dec_init: "zeros", init_norm: 1 };
    const defaults = Object.fromEntries(Object.entries(v.keys).map(([k, t]) => [k, (t as unknown as { parse(x: unknown): unknown }).parse(undefined)]));
    for (const s of v.specs({ D: 2, H: 4 }, { ...base, ...defaults, k: 1 } as never)) if (!COMMON.has(s.name)) owned.add(s.name);
  }
  assert.ok(owned.size >= 6, `found only ${[...owned].join(", ")}`);
  const found: string[] = [];
  for (const name of owned) {
    for (const f of files) {
      if (variantFolder(f.rel) && VARIANTS.some((v) => v.name === variantFolder(f.rel))) continue;
      // one-letter names (Scaled's s) only as parameter look-ups, not as any "s" in a string
      const lines = name.length > 1 ? literalLines(f.text, name) : f.text.split("\n").flatMap((l, i) => (new RegExp(`\\.get\\("${name}"\\)|views\\.${name}\\b|name: "${name}"`).test(l) ? [i + 1] : []));
      for (const line of lines) found.push(`src/${f.rel}:${line}: "${name}"`);
    }
  }
  assert.deepEqual(found, [], `variant parameters in generic code:\n${found.join("\n")}`);
});

test("imports run one way: lm, io and engine never import data; io and engine import no higher layer", () => {
  const LAYER: Record<string, number> = { cli: 4, train: 3, eval: 3, report: 3, sweep: 3, sae: 2, data: 2, lm: 2, config: 2, engine: 1, io: 1 };
  const bad: string[] = [];
  for (const f of files) {
    const from = f.rel.split("/")[0];
    for (const m of f.text.matchAll(/^import (?!type)[^;]*from "(\.\.\/)+([a-z]+)\//gm)) {
      const to = m[2];
      if (!(from in LAYER) || !(to in LAYER)) continue;
      const upward = LAYER[to] > LAYER[from];
      const lmData = from === "lm" && to === "data";
      if (upward || lmData) bad.push(`src/${f.rel} imports ${to}/`);
    }
  }
  assert.deepEqual(bad, [], bad.join("\n"));
});
