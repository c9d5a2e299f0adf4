import { Command } from "commander";
import os from "node:os";
import { addonPath, loadNative, selectEngine } from "../engine/index.ts";
import type { CliIo } from "./io.ts";
import { tfjsReport } from "../engine/tfjs.ts";
import { bf16Features, blasCoreWarning, cpuInfo } from "../engine/cpu.ts";
import { bf16Support } from "../engine/bf16.ts";

export function doctorCommand(io: CliIo): Command {
  return new Command("doctor")
    .description("show the engine in use, BLAS and its version, threads, CPU features, the tfjs backends and the GPU")
    .action(async () => {
      const choice = selectEngine();
      const cpu = cpuInfo();
      const { error } = loadNative();
      const simd = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"].filter((f) => cpu.flags.has(f));
      io.out(`engine:   ${choice.reason}`);
      io.out(`addon:    ${error ? `not loaded (${error})` : addonPath}`);
      if (choice.info) {
        io.out(`blas:     ${choice.info.blas}`);
        io.out(`kernels:  OpenBLAS ${choice.info.blasCore} (${choice.info.blasCoreSource})`);
        const slow = blasCoreWarning(choice.info.blasCore, cpu);
        if (slow) io.out(`warning:  ${slow}`);
        io.out(`compiled: ${choice.info.compiler}, ${choice.info.simd} kernels`);
      } else {
        io.out("hint:     build it with `npm run build:native` (needs Debian packages libopenblas-pthread-dev and pkg-config)");
      }
      io.out(`threads:  ${choice.threads} (cores: ${os.availableParallelism()})`);
      const model = cpu.family !== null ? ` (family ${cpu.family} model ${cpu.modelNumber})` : "";
      io.out(`cpu:      ${cpu.model}${model}; ${simd.length ? simd.join(", ") : "no AVX2/FMA"}`);
      const bf = bf16Support(choice, choice.engine.name), feats = bf16Features(cpu);
      io.out(`bf16:     ${bf.kernels ? bf.where : `unavailable: ${bf.why}`} (CPU: ${feats.length ? feats.join(", ") : "no bf16 instructions"}); train.precision auto picks ${bf.kernels ? "bf16" : "fp32"}`);
      io.out(`node:     ${process.version}`);
      const t = await tfjsReport();
      io.out(`tfjs:     ${t.backends}`);
      io.out(`gpu:      ${t.gpu}`);
      io.out(`auto:     train.engine auto picks ${t.auto}`);
    });
}
