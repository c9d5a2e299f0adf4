import { Command } from "commander";
import path from "node:path";
import { listRunIds, readStatus } from "../io/run.ts";
import { loadConfig } from "../config/load.ts";
import { K_VARIANTS } from "../config/schema.ts";
import type { CliIo } from "./io.ts";
import { readEval } from "./eval.ts";

export function runsCommand(io: CliIo): Command {
  return new Command("runs")
    .description("list runs: id, variant, status, steps, MSE, FVU, L0, dead %")
    .option("--runs-dir <dir>", "folder that holds runs", "runs")
    .option("--wide", "add the sparsity knob, dense %, gamma, recovered ground-truth features and the CE loss recovered (language-model data)")
    .addHelpText("after", `
Examples:
  sae runs
  sae runs --wide --runs-dir runs/synthetic`)
    .action((opts: { runsDir: string; wide?: boolean }) => {
      const ids = listRunIds(opts.runsDir);
      if (ids.length === 0) {
        io.out(`no runs in ${opts.runsDir}/ (start one with: sae train configs/quickstart.yaml)`);
        return;
      }
      const head = ["id", "variant", "status", "steps", "mse", "fvu", "l0", "dead%"];
      if (opts.wide) head.push("knob", "dense%", "gamma", "recovered%", "ce_rec");
      const rows = [head];
      for (const id of ids) {
        const dir = path.join(opts.runsDir, id);
        const s = readStatus(dir);
        const e = readEval(dir);
        const row = [
          id, s?.variant ?? "?", s?.status ?? "unknown", s ? `${s.step}/${s.steps}` : "?",
          e ? e.mse.toPrecision(4) : "-", e ? e.fvu.toFixed(4) : "-", e ? e.l0.toFixed(1) : "-", e ? (100 * e.dead_frac).toFixed(1) : "-",
        ];
        if (opts.wide) {
          row.push(knob(dir), e ? (100 * e.dense_frac).toFixed(1) : "-", e ? e.gamma.toFixed(3) : "-", e?.ground_truth ? (100 * e.ground_truth.recovered_0_9).toFixed(1) : "-", e?.downstream ? e.downstream.ce_loss_recovered.toFixed(4) : "-");
        }
        rows.push(row);
      }
      const widths = rows[0].map((_, j) => Math.max(...rows.map((r) => r[j].length)));
      for (const r of rows) io.out(r.map((c, j) => (j >= 3 ? c.padStart(widths[j]) : c.padEnd(widths[j]))).join("  ").trimEnd());
    });
}

/** the run's sparsity setting: k for TopK-style variants, else the penalty coefficient */
function knob(dir: string): string {
  try {
    const c = loadConfig(path.join(dir, "config.yaml"), [], { checkData: false }).config;
    if (K_VARIANTS.has(c.sae.variant)) return `k=${c.sae.k}`;
    return c.sae.variant === "jumprelu" ? `λ0=${c.sae.l0_coefficient}` : `λ=${c.sae.l1_coefficient}`;
  } catch {
    return "?";
  }
}
