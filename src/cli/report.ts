import { Command } from "commander";
import path from "node:path";
import { SaeError } from "../errors.ts";
import type { CliIo } from "./io.ts";
import { positiveFloat } from "./common.ts";
import { count } from "../text.ts";

export function reportCommand(io: CliIo): Command {
  return new Command("report")
    .description("compare runs: plots (.svg, .png), table.csv and a self-contained report.html")
    .argument("<runs...>", "sweep folders, run folders, folders of runs, or run ids")
    .requiredOption("--out <dir>", "folder for report.html, the plots and table.csv (created; files in it are replaced)")
    .option("--runs-dir <dir>", "folder that holds runs given by id", "runs")
    .option("--scale <s>", "PNG pixels per SVG unit", positiveFloat, 2)
    .option("--title <text>", "the page's title")
    .addHelpText("after", `
Plots, for each sweep (or set of runs on the same data): FVU and MSE against L0 with the Pareto
frontier; CE loss recovered and KL against L0 for language-model runs; γ and the L2 ratio against
L0; dead and dense latents; latent-density histograms; ground-truth recovery for synthetic data;
training curves from metrics.csv. Runs without an evaluation are listed, not plotted.

Examples:
  sae report runs/synthetic --out runs/synthetic/report
  sae report runs/synthetic runs/aidreams --out report/
  sae report 20261125-1815 20261125-1822 --out report/`)
    .action(async (args: string[], opts: { out: string; runsDir: string; scale: number; title?: string }) => {
      // loaded here, not at start-up: Vega and resvg take a while to load, and only this command needs them
      const { collectRuns } = await import("../report/collect.ts");
      const { writeReport } = await import("../report/write.ts");
      const runs = collectRuns(args, opts.runsDir);
      if (runs.length === 0) throw new SaeError("usage", `no runs in ${args.join(", ")}`, "give sweep folders, run folders or run ids");
      const t0 = performance.now();
      const r = await writeReport(runs, { out: opts.out, scale: opts.scale, title: opts.title });
      for (const m of r.missing) io.err(`warning: ${m.id}: ${m.problem}; left out of the plots`);
      io.out(`wrote ${path.relative(process.cwd(), r.html)} with ${count(r.plots.length, "plot")} (.svg and .png) and ${path.relative(process.cwd(), r.table)}: ${count(runs.length, "run")}, ${runs.length - r.missing.length} evaluated (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    });
}
