// What the CPU can do, read once from /proc/cpuinfo (Linux; elsewhere only os.cpus()' model), and
// which OpenBLAS kernel set matches it.
//
// Why the kernel set matters: Debian's OpenBLAS is built with DYNAMIC_ARCH and picks its kernels
// from the CPU's family/model number at load time. A model it does not know (0.3.21 and Intel
// family 6 model 207, Emerald Rapids) falls back to "Prescott", SSE3 kernels: the encoder GEMM
// ran at 31–55 GFLOP/s instead of 280 on two cores (docs/engine.md#blas-core). The SIMD flags
// tell us what the CPU can run, so unless the user chose (OPENBLAS_CORETYPE set), we name the
// kernel set that matches them before the library loads.
import fs from "node:fs";
import os from "node:os";

export interface CpuInfo { model: string; vendor: string; family: number | null; modelNumber: number | null; flags: Set<string> }

let cached: CpuInfo | null = null;

export function cpuInfo(): CpuInfo {
  if (cached) return cached;
  let text = "";
  try {
    text = fs.readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    // not Linux: no flags, no kernel-set choice
  }
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, "m").exec(text)?.[1]?.trim();
  const num = (s: string | undefined) => (s !== undefined && /^\d+$/.test(s) ? Number(s) : null);
  cached = {
    model: field("model name") ?? os.cpus()[0]?.model ?? "unknown",
    vendor: field("vendor_id") ?? "unknown",
    family: num(field("cpu family")),
    modelNumber: num(field("model")),
    flags: new Set((field("flags") ?? "").split(/\s+/).filter(Boolean)),
  };
  return cached;
}

/** the SIMD level the flags allow, as the addon's `simd` names it */
export function simdLevel(cpu: CpuInfo): "avx512" | "avx2" | "sse" {
  const f = cpu.flags;
  if (["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].every((x) => f.has(x))) return "avx512";
  if (f.has("avx2") && f.has("fma")) return "avx2";
  return "sse";
}

/**
 * The OpenBLAS kernel set (an OPENBLAS_CORETYPE value) for this CPU, or null to leave OpenBLAS's
 * own choice: the AVX-512 sets on CPUs with AVX-512 (Cooperlake where AVX512-BF16 is there, as
 * OpenBLAS itself maps Sapphire Rapids), Haswell's (AMD: Zen's, the same kernels with its own
 * blocking) with AVX2 and FMA. These are the sets OpenBLAS picks for every CPU of those levels it
 * knows, so naming one changes nothing where its detection works.
 */
export function blasCoreFor(cpu: CpuInfo): string | null {
  const level = simdLevel(cpu);
  if (level === "avx512") return cpu.flags.has("avx512_bf16") ? "Cooperlake" : "SkylakeX";
  if (level === "avx2") return cpu.vendor === "AuthenticAMD" ? "Zen" : "Haswell";
  return null;
}

const LEVEL = { sse: 0, avx2: 1, avx512: 2 } as const;
const CORE_LEVEL: Record<string, number> = { haswell: 1, zen: 1, skylakex: 2, cooperlake: 2, sapphirerapids: 2 };

/** a sentence when OpenBLAS runs kernels below what the CPU can run, else null */
export function blasCoreWarning(core: string, cpu: CpuInfo): string | null {
  const level = simdLevel(cpu);
  const has = CORE_LEVEL[core.toLowerCase()] ?? 0;
  if (has >= LEVEL[level]) return null;
  return `OpenBLAS runs its ${core} kernels on a CPU with ${level}: GEMMs several times slower than they can be; unset OPENBLAS_CORETYPE or set it to ${blasCoreFor(cpu)}`;
}

/** the CPU's bfloat16 instruction sets, as /proc/cpuinfo names them (train.precision, docs/engine.md#bfloat16) */
export function bf16Features(cpu: CpuInfo): string[] {
  return ["amx_bf16", "avx512_bf16"].filter((f) => cpu.flags.has(f));
}
