// Sizes checked before anything is allocated: a config whose arrays cannot exist on this machine
// (a typo like batch_size: 1e12, or d_sae: 1e8) stops with the key, what it needs and what fits,
// instead of a "RangeError: Invalid typed array length" or the machine swapping. The figures are
// lower bounds of what training holds at once (docs/training.md#memory).
import os from "node:os";
import type { Config } from "./schema.ts";
import { variantDef } from "../sae/index.ts";
import { SaeError } from "../errors.ts";

/** the most elements one typed array may have (V8 on 64-bit) */
export const MAX_ARRAY = 2 ** 32;

/** keys: the config keys the array's size grows with (the blamed one is the one most out of range) */
interface Need { keys: string[][]; what: string; held: string; elements: number; copies: number; bytesPerElement: number; per: number }

/** the big arrays of a run: elements, copies alive at once (`held` says which); `per` is the elements per unit of the key, for "what fits" */
function needs(c: Config): Need[] {
  const D = c.data.d_in, H = c.sae.d_sae, B = c.train.batch_size;
  const params = variantDef(c.sae.variant).specs({ D, H }, c.sae).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
  const out: Need[] = [
    { keys: [["sae", "d_sae"]], what: `the parameters (${params} values for d_in ${D} × d_sae ${H})`, held: "with their gradients and Adam's two moments", elements: params, copies: 4, bytesPerElement: 4, per: params / H },
    { keys: [["train", "batch_size"], ["sae", "d_sae"]], what: `the pre-activations [batch_size ${B}, d_sae ${H}]`, held: "and their gradient", elements: B * H, copies: 2, bytesPerElement: 4, per: H },
    { keys: [["train", "batch_size"]], what: `a batch [batch_size ${B}, d_in ${D}]`, held: "with its reconstruction and gradient", elements: B * D, copies: 3, bytesPerElement: 4, per: D },
    { keys: [["data", "eval_tokens"]], what: `the held-out set [eval_tokens ${c.data.eval_tokens}, d_in ${D}]`, held: "", elements: c.data.eval_tokens * D, copies: 1, bytesPerElement: 4, per: D },
    { keys: [["data", "norm_estimate_tokens"]], what: `the estimation sample [norm_estimate_tokens ${c.data.norm_estimate_tokens}, d_in ${D}]`, held: "", elements: c.data.norm_estimate_tokens * D, copies: 1, bytesPerElement: 4, per: D },
  ];
  if (c.data.source === "synthetic") {
    const n = c.data.synthetic.n_features;
    out.push({ keys: [["data", "synthetic", "n_features"]], what: `the ground-truth features [n_features ${n}, d_in ${D}]`, held: "and a copy", elements: n * D, copies: 2, bytesPerElement: 4, per: D });
  }
  return out;
}

/** Refuses a config whose arrays exceed what one array may hold or what the machine's memory holds. */
export function checkMemory(c: Config, where: (p: string[]) => string, total = os.totalmem()): void {
  const problem = tooBig(c, total);
  if (!problem) return;
  const { need: n, msg } = problem;
  // blame the key furthest from a value that fits (batch_size 1e12 rather than its d_sae 512)
  const options = n.keys.map((key) => ({ key, fits: largestFitting(c, key, total), now: valueAt(c, key) })).filter((o) => o.fits >= 1);
  const best = options.sort((a, b) => b.now / b.fits - a.now / a.fits)[0];
  const key = best?.key ?? n.keys[0];
  throw new SaeError("config", `${where(key)}${key.join(".")}: ${msg}`, best ? `${key.at(-1)} up to ${fmtCount(best.fits)} fits (the other keys as they are)` : "make the SAE or the data smaller");
}

function tooBig(c: Config, total: number): { need: Need; msg: string } | null {
  const list = needs(c);
  for (const n of list) {
    if (n.elements > MAX_ARRAY) return { need: n, msg: `${n.what} would be one array of ${fmtCount(n.elements)} values; an array holds at most ${fmtCount(MAX_ARRAY)}` };
  }
  const size = (n: Need) => n.elements * n.copies * n.bytesPerElement;
  const bytes = list.reduce((a, n) => a + size(n), 0);
  if (bytes <= total) return null;
  const worst = list.reduce((a, b) => (size(b) > size(a) ? b : a));
  return { need: worst, msg: `training would hold at least ${fmtBytes(bytes)} (${fmtBytes(size(worst))} of it ${worst.what}${worst.held ? ` ${worst.held}` : ""}); this machine has ${fmtBytes(total)} of memory` };
}

/** the largest value of the key (below its current one) with which the config fits, by bisection; 0 when none does */
function largestFitting(c: Config, key: string[], total: number): number {
  const at = (v: number) => {
    const x = structuredClone(c) as unknown as Record<string, Record<string, unknown>>;
    let o: Record<string, unknown> = x;
    for (const k of key.slice(0, -1)) o = o[k] as Record<string, unknown>;
    o[key.at(-1)!] = v;
    return tooBig(x as unknown as Config, total) === null;
  };
  let lo = 0, hi = valueAt(c, key) - 1;
  if (hi >= 1 && at(hi)) return hi;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (mid >= 1 && at(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function valueAt(c: Config, key: string[]): number {
  return key.reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], c) as number;
}

function fmtBytes(b: number): string {
  const units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
  let i = 0;
  while (b >= 1000 && i < units.length - 1) { b /= 1000; i++; }
  return `${b.toPrecision(3)} ${units[i]}`;
}

function fmtCount(n: number): string {
  return n >= 1e6 ? n.toExponential(2) : String(n);
}
