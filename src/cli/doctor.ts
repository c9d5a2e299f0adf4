import { Command } from "commander";
import os from "node:os";
import fs from "node:fs";
import { addonPath, loadNative, selectEngine } from "../engine/index.ts";
import type { CliIo } from "./io.ts";
import { tfjsReport } from "../engine/tfjs.ts";

export function doctorCommand(io: CliIo): Command {
  return new Command("doctor")
    .description("show the engine in use, BLAS and its version, threads, CPU features, the tfjs backends and the GPU")
    .action(async () => {
      const choice = selectEngine();
      const { error } = loadNative();
      const cpu = os.cpus()[0]?.model ?? "unknown";
      const flags = fs.existsSync("/proc/cpuinfo") ? (fs.readFileSync("/proc/cpuinfo", "utf8").match(/^flags\s*:(.*)$/m)?.[1] ?? "") : "";
      const simd = ["avx2", "fma", "avx512f"].filter((f) => flags.split(" ").includes(f));
      io.out(`engine:   ${choice.reason}`);
      io.out(`addon:    ${error ? `not loaded (${error})` : addonPath}`);
      if (choice.info) {
        io.out(`blas:     ${choice.info.blas}`);
        io.out(`compiled: ${choice.info.compiler}, ${choice.info.simd} kernels`);
      } else {
        io.out("hint:     build it with `npm run build:native` (needs Debian packages libopenblas-pthread-dev and pkg-config)");
      }
      io.out(`threads:  ${choice.threads} (cores: ${os.availableParallelism()})`);
      io.out(`cpu:      ${cpu}; ${simd.length ? simd.join(", ") : "no AVX2/FMA"}`);
      io.out(`node:     ${process.version}`);
      const t = await tfjsReport();
      io.out(`tfjs:     ${t.backends}`);
      io.out(`gpu:      ${t.gpu}`);
      io.out(`auto:     train.engine auto picks ${t.auto}`);
    });
}
