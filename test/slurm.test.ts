// `sae sweep --slurm --submit` against a real Slurm: a one-node cluster on this machine (munged,
// slurmctld and slurmd with a slurm.conf naming this host, ProctrackType=proctrack/linuxproc,
// TaskPlugin=task/none), started and stopped by PID. A small sweep with fine-tunes (two job arrays,
// the second after the first) must finish every run with exactly the local sweep's results.
// Skipped, with the reason, only where Slurm is not installed (.ci/run installs it).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { runResults, sweepFolder } from "./sweep-helpers.ts";

const BIN = path.resolve(import.meta.dirname, "../bin/sae.js");
const which = (cmd: string) => ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map((d) => path.join(d, cmd)).find((p) => fs.existsSync(p));
const TOOLS = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"];
const missing = TOOLS.filter((t) => !which(t));
if (missing.length && process.env.CI) throw new Error(`Slurm is not installed (${missing.join(", ")} missing); .ci/run installs it`);
const skip = missing.length ? `Slurm is not installed here (${missing.join(", ")} missing; .ci/run installs slurmctld, slurmd, slurm-client and munge)` : false;

let dir = "";
const daemons: ChildProcess[] = [];
let env: NodeJS.ProcessEnv = {};

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

async function until(what: string, ok: () => boolean, seconds: number): Promise<void> {
  for (let i = 0; i < seconds * 5; i++) {
    if (ok()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  const logs = ["munged.log", "slurmctld.log", "slurmd.log"].map((f) => path.join(dir, f)).filter((f) => fs.existsSync(f)).map((f) => `--- ${path.basename(f)}\n${fs.readFileSync(f, "utf8").split("\n").slice(-15).join("\n")}`);
  throw new Error(`timed out after ${seconds} s waiting for ${what}\n${logs.join("\n")}`);
}

function start(cmd: string, args: string[]): ChildProcess {
  const out = fs.openSync(path.join(dir, `${cmd}.out`), "a");
  const p = spawn(which(cmd)!, args, { stdio: ["ignore", out, out], env });
  fs.closeSync(out);
  daemons.push(p);
  return p;
}

before(async () => {
  if (skip) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sae-slurm-"));
  fs.chmodSync(dir, 0o755); // munged wants its socket's folder reachable by everyone
  for (const d of ["state", "spool"]) fs.mkdirSync(path.join(dir, d));
  const host = os.hostname().split(".")[0];
  const sock = path.join(dir, "munge.sock");
  const [ctldPort, dPort] = [await freePort(), await freePort()];
  const conf = path.join(dir, "slurm.conf");
  fs.writeFileSync(conf, [
    "ClusterName=saetest", `SlurmctldHost=${host}`, `SlurmctldPort=${ctldPort}`, `SlurmdPort=${dPort}`,
    "AuthType=auth/munge", `AuthInfo=socket=${sock}`, "CredType=cred/munge", "SlurmUser=root", "SlurmdUser=root",
    `StateSaveLocation=${dir}/state`, `SlurmdSpoolDir=${dir}/spool`,
    `SlurmctldPidFile=${dir}/slurmctld.pid`, `SlurmdPidFile=${dir}/slurmd.pid`, `SlurmctldLogFile=${dir}/slurmctld.log`, `SlurmdLogFile=${dir}/slurmd.log`,
    "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
    "ReturnToService=2", "MpiDefault=none", "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
    `NodeName=${host} CPUs=${os.availableParallelism()} State=UNKNOWN`, "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", "",
  ].join("\n"));
  env = { ...process.env, SLURM_CONF: conf };
  start("munged", ["-F", "-f", `--socket=${sock}`, "--key-file=/etc/munge/munge.key", `--log-file=${dir}/munged.log`, `--pid-file=${dir}/munged.pid`, `--seed-file=${dir}/munged.seed`]);
  await until("munged's socket", () => fs.existsSync(sock), 20);
  start("slurmctld", ["-D", "-i", "-f", conf]);
  start("slurmd", ["-D", "-f", conf]);
  await until("the node to be idle", () => /idle/.test(spawnSync("sinfo", ["-h", "-o", "%t"], { env, encoding: "utf8" }).stdout ?? ""), 60);
});

after(async () => {
  for (const p of daemons.reverse()) {
    if (p.exitCode !== null) continue;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  }
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test("sae sweep --slurm --submit: one array task per run, fine-tunes after their parents, the same results as the local sweep", { skip, timeout: 600_000 }, async () => {
  const { file, dir: work } = sweepFolder();
  const onSlurm = path.join(work, "slurm-runs");
  const sub = spawnSync(process.execPath, [BIN, "sweep", file, "--runs-dir", onSlurm, "--slurm", "--cpus-per-task", "1", "--time", "10:00", "--submit"], { env, encoding: "utf8" });
  assert.equal(sub.status, 0, sub.stderr);
  const ids = [...sub.stdout.matchAll(/submitted job (\d+)/g)].map((m) => m[1]);
  assert.equal(ids.length, 2, sub.stdout); // the three base runs, then the two fine-tunes
  const script = fs.readFileSync(path.join(onSlurm, "tiny", "slurm", "sweep.sbatch"), "utf8");
  assert.match(script, /#SBATCH --cpus-per-task=1/);
  assert.match(script, /sweep \S+sweep\.yaml --runs-dir \S+ --index "\$SLURM_ARRAY_TASK_ID"/);
  await until("the job arrays to finish", () => (spawnSync("squeue", ["-h", "-j", ids.join(",")], { env, encoding: "utf8" }).stdout ?? "x").trim() === "", 480);
  const sweepDir = path.join(onSlurm, "tiny");
  const names = ["standard-l1_0.05", "standard-l1_0.2", "topk-k4", "standard-ft-l1_0.05", "standard-ft-l1_0.2"];
  const taskLogs = () => fs.readdirSync(path.join(sweepDir, "logs")).map((f) => fs.readFileSync(path.join(sweepDir, "logs", f), "utf8")).join("\n");
  for (const n of names) assert.equal(JSON.parse(fs.readFileSync(path.join(sweepDir, n, "status.json"), "utf8")).status, "done", `${n}:\n${taskLogs()}`);
  assert.equal(fs.readdirSync(path.join(sweepDir, "logs")).filter((f) => f.startsWith("slurm-")).length, names.length);

  const local = spawnSync(process.execPath, [BIN, "sweep", file, "--runs-dir", path.join(work, "local"), "--jobs", "2", "--threads", "1"], { encoding: "utf8" });
  assert.equal(local.status, 0, local.stderr);
  for (const n of names) {
    const a = runResults(path.join(work, "local", "tiny", n)), b = runResults(path.join(sweepDir, n));
    for (const k of Object.keys(a)) assert.equal(b[k], a[k], `${n}: ${k} differs between Slurm and the local sweep`);
  }
  // resubmitting a finished sweep submits nothing
  const again = spawnSync(process.execPath, [BIN, "sweep", file, "--runs-dir", onSlurm, "--slurm", "--submit"], { env, encoding: "utf8" });
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stdout, /every run is done; nothing to submit/);
});
