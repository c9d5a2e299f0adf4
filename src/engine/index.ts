// Picks the engine once at start-up: the native addon when it loads, else the TypeScript
// reference kernels. SAE_ENGINE=typescript|native forces one. The caller prints `reason`.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";
import os from "node:os";
import { jsEngine } from "./js.ts";
import type { Engine } from "./types.ts";
import { SaeError } from "../errors.ts";
import { blasCoreFor, cpuInfo } from "./cpu.ts";
import type { Bf16Kernels } from "./bf16.ts";

export type { Arr, Engine } from "./types.ts";

/** whether the bf16 GEMMs run here, and why not (docs/engine.md#bfloat16) */
export interface Bf16Info { available: boolean; reason: string; isa: string; onednn: string; impl: string }
/** blasCore: the kernel set OpenBLAS runs; blasCoreSource: who chose it (docs/engine.md#blas-core) */
export interface NativeInfo { threads: number; blas: string; blasCore: string; blasCoreSource: string; compiler: string; simd: string; bf16: Bf16Info }
interface NativeAddon extends Omit<Engine, "name">, Bf16Kernels { setThreads(n: number): void; info(): NativeInfo }
type RawAddon = Omit<NativeAddon, "info"> & { info(): Omit<NativeInfo, "blasCoreSource"> };

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const addonPath = path.join(root, "build/Release/sae_native.node");

let cached: { addon: NativeAddon | null; error: string | null } | null = null;

/** Loads the addon once; returns it, or null with the reason it failed. */
export function loadNative(): { addon: NativeAddon | null; error: string | null } {
  if (cached) return cached;
  try {
    // OpenBLAS's idle workers spin for a while after each call; on a few cores they steal the CPU
    // from the kernels that follow a GEMM (top-k ran 1.6x slower). A short timeout puts them to
    // sleep at once. Read by OpenBLAS when it loads, so it is set before the addon is.
    process.env.OPENBLAS_THREAD_TIMEOUT ??= "4";
    // OpenBLAS picks its kernels from the CPU's model number and falls back to SSE3 ones on a model
    // it does not know (7x slower GEMM on Emerald Rapids): name the set the SIMD flags call for,
    // unless the user did. Also read when the library loads.
    const userCore = process.env.OPENBLAS_CORETYPE;
    const core = userCore ? null : blasCoreFor(cpuInfo());
    // oneDNN (the bf16 GEMMs) runs on OpenMP, whose idle workers spin too; passive ones sleep at
    // once and leave the cores to OpenBLAS and the kernels (docs/engine.md#bfloat16). Read when
    // libgomp loads with the addon.
    process.env.OMP_WAIT_POLICY ??= "passive";
    if (core) process.env.OPENBLAS_CORETYPE = core;
    const require = createRequire(import.meta.url);
    const raw = require(addonPath) as RawAddon;
    const source = userCore ? `OPENBLAS_CORETYPE=${userCore}, set by you` : core ? "chosen by sae from the CPU's flags" : "detected by OpenBLAS";
    cached = { addon: { ...raw, info: () => ({ ...raw.info(), blasCoreSource: source }) }, error: null };
  } catch (e) {
    cached = { addon: null, error: (e as Error).message.split("\n")[0] };
  }
  return cached;
}

export function nativeEngine(addon: NativeAddon): Engine {
  return {
    name: "native",
    gemm: addon.gemm, colSum: addon.colSum,
    // optional trailing arguments are passed explicitly: the addon checks the argument count
    addBias: (P, bias, rows, cols, relu, colSum) => addon.addBias(P, bias, rows, cols, relu, colSum ?? null),
    reluBackward: (G, F, colAdd, rows, cols, colSum) => addon.reluBackward(G, F, colAdd, rows, cols, colSum ?? null),
    topkRows: addon.topkRows, rowsAbove: addon.rowsAbove, kthLargest: addon.kthLargest, batchCut: addon.batchCut, gatherRows: addon.gatherRows, gatherRows2: addon.gatherRows2, gatherDot: addon.gatherDot, valuesAt: addon.valuesAt,
    scatterRows: addon.scatterRows, scatterDot: addon.scatterDot, sparseBackward: addon.sparseBackward, adam: addon.adam, adamUnitRows: addon.adamUnitRows, rowNorms: addon.rowNorms,
    projectRows: addon.projectRows, normalizeRows: addon.normalizeRows, sumSquares: addon.sumSquares, zero: addon.zero, axpby: addon.axpby,
    attention: addon.attention,
  };
}

export interface EngineChoice { engine: Engine; threads: number; reason: string; info: NativeInfo | null }

/** want: auto, native or typescript (default: SAE_ENGINE, else auto) */
export function selectEngine(threads?: number, want = process.env.SAE_ENGINE ?? "auto"): EngineChoice {
  if (!["auto", "native", "typescript"].includes(want)) {
    throw new SaeError("usage", `SAE_ENGINE=${want} is not an engine`, "use SAE_ENGINE=native, SAE_ENGINE=typescript, or unset it");
  }
  const n = threads ?? os.availableParallelism();
  if (want === "typescript") return { engine: jsEngine, threads: 1, reason: "TypeScript engine (SAE_ENGINE=typescript)", info: null };
  const { addon, error } = loadNative();
  if (!addon) {
    if (want === "native") {
      throw new SaeError("runtime", `the native engine did not load: ${error}`, "run `npm run build:native` (needs libopenblas-pthread-dev and pkg-config), then `sae doctor`");
    }
    return { engine: jsEngine, threads: 1, reason: `TypeScript engine, slow (native addon not loaded: ${error}; run \`npm run build:native\`)`, info: null };
  }
  addon.setThreads(n);
  const info = addon.info();
  return { engine: nativeEngine(addon), threads: n, reason: `native engine, ${n} threads, ${info.blas.split(" ").slice(0, 2).join(" ")} (${info.blasCore} kernels)`, info };
}
