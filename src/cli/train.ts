import { Command, Option } from "commander";
import cliProgress from "cli-progress";
import { probeData } from "../data/index.ts";
import { configFromObject, loadConfig, type LoadedConfig } from "../config/load.ts";
import { selectEngine, type EngineChoice } from "../engine/index.ts";
import type { Config } from "../config/schema.ts";
import { createRunDir, newRunId } from "../io/run.ts";
import { train, type TrainReporter } from "../train/loop.ts";
import type { CliIo } from "./io.ts";
import { collect, positiveInt } from "./common.ts";
import { printEval } from "./eval.ts";
import { SaeError } from "../errors.ts";
import { ENGINES, resolveTfjs, type EngineName, type TfjsChoice } from "../engine/tfjs.ts";
import { tfjsStepper } from "../train/tfjs-stepper.ts";

/** --engine, on train, resume, finetune and eval */
export const engineOption = () => new Option("--engine <engine>", "native (CPU), tfjs (the equations on the best tfjs backend: CUDA with @tensorflow/tfjs-node-gpu) or auto (tfjs when it finds a GPU); default: train.engine").choices(ENGINES);

export function trainCommand(io: CliIo): Command {
  return new Command("train")
    .description("train an SAE from a YAML experiment; writes runs/<run-id>/")
    .argument("<config>", "YAML experiment file (see configs/)")
    .option("--set <key=value>", "override a config key, type-checked (repeatable)", collect, [])
    .option("--run-id <id>", "name of the run folder (default: time-name-variant-random)")
    .option("--runs-dir <dir>", "folder that holds runs (default: the config's runs_dir, or runs)")
    .option("--threads <n>", "CPU threads (default: all cores)", positiveInt)
    .addOption(engineOption())
    .addHelpText("after", `
Examples:
  sae train configs/quickstart.yaml
  sae train configs/standard.yaml --set sae.l1_coefficient=0.03 --set train.steps=2000
  for k in 16 32 64; do sae train configs/quickstart.yaml --set sae.k=$k; done`)
    .action(async (file: string, opts: { set: string[]; runId?: string; runsDir?: string; threads?: number; engine?: EngineName }) => {
      const sets = [...opts.set];
      if (opts.runsDir !== undefined) sets.push(`runs_dir=${opts.runsDir}`);
      if (opts.engine !== undefined) sets.push(`train.engine=${opts.engine}`);
      await runTraining(io, loadConfig(file, sets, { probe: probeData }), [], { runId: opts.runId, threads: opts.threads });
    });
}

/** Validates the config (a loaded one, or an object with --set overrides), creates the run folder, trains, prints the evaluation. */
export async function runTraining(io: CliIo, source: LoadedConfig | Record<string, unknown>, sets: string[], opts: { runId?: string; threads?: number }): Promise<void> {
  const { config, warnings } = "config" in source && "warnings" in source ? (source as LoadedConfig) : configFromObject(source, sets, probeData);
  for (const w of warnings) io.err(`warning: ${w}`);
  const engine = selectEngine(opts.threads ?? config.train.threads);
  const tfjs = await resolveTfjs(config.train.engine);
  const runId = opts.runId ?? newRunId(config.name, config.sae.variant);
  const runDir = createRunDir(config.runs_dir, runId);
  await execute(io, config, runDir, runId, engine, false, tfjs);
}

/** signals that stop a run as Ctrl-C does: a checkpoint, status interrupted, exit 130 (a batch system's SIGTERM, a closed terminal's SIGHUP) */
const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/**
 * Trains (or resumes) in runDir with a progress bar or log lines, signal handling, and the final
 * table. allowEngineChange: a resume asked for its engine or thread count (--engine, --threads).
 */
export async function execute(io: CliIo, config: Config, runDir: string, runId: string, engine: EngineChoice, resume: boolean, tfjs: TfjsChoice | null = null, opts: { allowEngineChange?: boolean } = {}): Promise<void> {
  const control = { stop: false };
  const onSignal = (sig: NodeJS.Signals) => {
    if (control.stop) process.exit(130);
    control.stop = true;
    io.err(`\n${sig}: stopping after this step (${sig === "SIGINT" ? "Ctrl-C" : sig} again to abort without saving)...`);
  };
  for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
  // On a terminal: a progress bar, with log lines printed above it; otherwise plain lines.
  let multi: cliProgress.MultiBar | null = null;
  let bar: cliProgress.SingleBar | null = null;
  const reporter: TrainReporter = { log: (l) => io.err(l) };
  if (io.isTTY) {
    multi = new cliProgress.MultiBar(
      { format: "{bar} {percentage}% | step {value}/{total} | {tps} tok/s | ETA {eta_formatted} | loss {loss} | L0 {l0}", stream: process.stderr, hideCursor: true, clearOnComplete: false },
      cliProgress.Presets.shades_classic,
    );
    reporter.log = (l) => multi!.log(l + "\n");
    reporter.progress = (step, total, info) => {
      bar ??= multi!.create(total, 0, { tps: "-", loss: "-", l0: "-" });
      bar.update(step, info ? { tps: Math.round(info.tokensPerSec), loss: info.loss.toPrecision(4), l0: info.l0.toFixed(1) } : {});
    };
  }
  try {
    // tfjs: its steps on the device; the evaluation stays on the CPU engine
    const on = tfjs ? { engine: { ...engine, reason: `${tfjs.reason}; evaluation: ${engine.reason}` }, stepper: tfjsStepper(tfjs, config), engineName: "tfjs" } : { engine };
    const { status, eval: result, phases } = await train({ config, runDir, runId, reporter, control, resume, allowEngineChange: opts.allowEngineChange, ...on });
    multi?.stop();
    if (status.status === "interrupted") throw new SaeError("interrupted", `run ${runId} interrupted at step ${status.step}`);
    if (result) {
      io.out(`run ${runId} ${status.status}: ${runDir}`);
      if (phases.length > 1) for (const ph of phases) io.out(`  phase ${ph.phase} (step ${ph.step}): fvu ${ph.fvu.toFixed(4)}, l0 ${ph.l0.toFixed(2)}, gamma ${ph.gamma.toFixed(4)}`);
      printEval(io, result);
    }
  } finally {
    multi?.stop();
    for (const sig of STOP_SIGNALS) process.off(sig, onSignal);
  }
}
