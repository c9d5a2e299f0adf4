// The OpenBLAS kernel set: sae names the one the CPU's SIMD flags call for (OpenBLAS 0.3.21 falls
// back to SSE3 kernels on CPU models it does not know; docs/engine.md#blas-core), leaves the user's
// OPENBLAS_CORETYPE alone, and `sae doctor` says which set runs and warns when it is too weak.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { blasCoreFor, blasCoreWarning, cpuInfo, simdLevel, type CpuInfo } from "../src/engine/cpu.ts";
import { loadNative } from "../src/engine/index.ts";

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../bin/sae.js");
const cpu = (vendor: string, flags: string): CpuInfo => ({ model: "x", vendor, family: 6, modelNumber: 207, flags: new Set(flags.split(" ")) });
const AVX512 = "sse3 avx avx2 fma avx512f avx512bw avx512vl avx512dq avx512cd";

test("the kernel set follows the SIMD flags", () => {
  assert.equal(blasCoreFor(cpu("GenuineIntel", `${AVX512} avx512_bf16 amx_bf16`)), "Cooperlake");
  assert.equal(blasCoreFor(cpu("GenuineIntel", AVX512)), "SkylakeX");
  assert.equal(blasCoreFor(cpu("GenuineIntel", "sse3 avx avx2 fma")), "Haswell");
  assert.equal(blasCoreFor(cpu("AuthenticAMD", "sse3 avx avx2 fma")), "Zen");
  assert.equal(blasCoreFor(cpu("GenuineIntel", "sse3 avx avx512f")), null, "AVX-512 foundation alone is not SkylakeX's set");
  assert.equal(blasCoreFor(cpu("GenuineIntel", "sse3 avx")), null);
  assert.equal(simdLevel(cpu("GenuineIntel", "avx2")), "sse", "AVX2 without FMA");
  assert.match(blasCoreWarning("Prescott", cpu("GenuineIntel", AVX512))!, /Prescott kernels on a CPU with avx512.*set it to SkylakeX/);
  assert.match(blasCoreWarning("Haswell", cpu("GenuineIntel", AVX512))!, /Haswell/);
  assert.equal(blasCoreWarning("SkylakeX", cpu("GenuineIntel", AVX512)), null);
  assert.equal(blasCoreWarning("Zen", cpu("AuthenticAMD", "avx2 fma")), null);
});

const doctor = (env: NodeJS.ProcessEnv) => {
  const r = spawnSync(process.execPath, [bin, "doctor"], { encoding: "utf8", env, timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
};
const envWithout = (key: string) => Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== key));

test("sae doctor: the kernel set sae chose, or the one the user set", { skip: loadNative().addon ? false : "native addon not built" }, () => {
  const want = blasCoreFor(cpuInfo());
  const chosen = doctor(envWithout("OPENBLAS_CORETYPE"));
  if (want) assert.match(chosen, new RegExp(`kernels:  OpenBLAS ${want} \\(chosen by sae from the CPU's flags\\)`));
  else assert.match(chosen, /kernels:  OpenBLAS \S+ \(detected by OpenBLAS\)/);
  assert.doesNotMatch(chosen, /warning:/);
  const user = doctor({ ...process.env, OPENBLAS_CORETYPE: "Prescott" });
  assert.match(user, /kernels:  OpenBLAS Prescott \(OPENBLAS_CORETYPE=Prescott, set by you\)/);
  if (want) assert.match(user, /warning:  OpenBLAS runs its Prescott kernels/);
});
