// `npm run bench -- --profile` at the small shape: the per-kernel breakdown of one step is there and
// adds up (no timing assertions: speed lives in the bench itself).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";

test("bench --profile: every kernel of the step, summing to at most the step's time", () => {
  for (const c of ["0", "5"]) {
    const r = spawnSync(process.execPath, ["--import", "tsx", "scripts/bench.ts", "--case", c, "--steps", "1", "--profile"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.match(lines[0], /^cpu: .*; addon built for (avx512|avx2|sse|\(no addon\)); OpenBLAS \S+ kernels$/);
    assert.match(r.stdout, /\(remainder: JS\)/);
    const row = JSON.parse(lines.at(-1)!);
    const p = row.profile;
    const names = Object.keys(p.kernels);
    for (const k of ["adam", "sumSquares"]) assert.ok(names.includes(k), `case ${c}: ${k} missing from ${names.join(", ")}`);
    assert.ok(names.some((n) => /^gemm \d+×\d+×\d+$/.test(n)), "GEMMs are listed by shape");
    const sum = Object.values(p.kernels as Record<string, { ms: number; calls: number }>).reduce((a, k) => a + k.ms, 0);
    assert.ok(Math.abs(sum - p.kernel_ms) < 1e-9 && p.kernel_ms <= p.step_ms, `kernels ${p.kernel_ms} ms of a ${p.step_ms} ms step`);
    assert.ok(Math.abs(p.kernel_ms + p.remainder_ms - p.step_ms) < 1e-9);
  }
});
