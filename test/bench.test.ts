// `npm run bench -- --profile` at the small shape: the per-kernel breakdown of one step is there and
// adds up; `--against` compares two checkouts; --help and unknown options (no timing assertions:
// speed lives in the bench itself).
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

test("bench --against: two checkouts' steps alternated in one process (here this one against itself); a folder without the bench is refused", () => {
  const r = spawnSync(process.execPath, ["--import", "tsx", "scripts/bench.ts", "--against", ".", "--case", "0", "--rounds", "3"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const row = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.equal(row.case, "topk, AuxK on (1% dead)");
  for (const k of ["before_min", "before_median", "after_min", "after_median", "ratio_median", "ratio_of_minima"]) assert.ok(Number.isFinite(row[k]) && row[k] > 0, `${k}: ${row[k]}`);
  assert.ok(row.before_min <= row.before_median && row.after_min <= row.after_median);
  assert.ok(Math.abs(row.ratio_of_minima - row.after_min / row.before_min) < 1e-12);
  // the part outside the encoder-shaped GEMMs: positive, and below the step round by round
  for (const k of ["rest_before_median", "rest_after_median", "rest_ratio_median"]) assert.ok(Number.isFinite(row[k]) && row[k] > 0, `${k}: ${row[k]}`);
  assert.ok(row.rest_before_median < row.before_median && row.rest_after_median < row.after_median, "each round's rest is its step less a GEMM, so the medians order so too");
  const bad = spawnSync(process.execPath, ["--import", "tsx", "scripts/bench.ts", "--against", "/nonexistent"], { encoding: "utf8" });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^error: --against \/nonexistent: no scripts\/bench\.ts there/);
  assert.doesNotMatch(bad.stderr, /    at /);
});

test("bench --help lists the options without running a case; an unknown option exits 2 naming it", () => {
  const run = (...a: string[]) => spawnSync(process.execPath, ["--import", "tsx", "scripts/bench.ts", ...a], { encoding: "utf8" });
  const help = run("--help");
  assert.equal(help.status, 0, help.stderr);
  for (const flag of ["--json", "--profile", "--precision", "--against", "--case"]) assert.match(help.stdout, new RegExp(`^  ${flag}`, "m"));
  assert.doesNotMatch(help.stdout, /× GEMM/, "no case ran");
  const bad = run("--proflie");
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^error: unknown option --proflie; `npm run bench -- --help` lists them/);
});
