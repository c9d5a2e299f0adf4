// The tfjs engine's base (docs/tfjs.md): loading a tfjs backend, and the tensor operations the
// variants' equations are written in (the Ops interface of src/sae/ops.ts, matched structurally so
// that this layer imports nothing above it) over tf.Tensor, in float32.
//
// Backends, first that loads: @tensorflow/tfjs-node-gpu (libtensorflow built for CUDA), then
// @tensorflow/tfjs-node (libtensorflow on the CPU), else the pure-JavaScript CPU backend of
// @tensorflow/tfjs. Everything here is imported dynamically: the native engine never loads tfjs.
import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type * as TfModule from "@tensorflow/tfjs";
import { SaeError } from "../errors.ts";

export type Tf = typeof TfModule;
export type Tensor = TfModule.Tensor;
/** what tf.customGrad takes (its type is not exported by @tensorflow/tfjs) */
type CustomGradientFunc = Parameters<Tf["customGrad"]>[0];

export interface TfjsChoice {
  tf: Tf;
  /** the npm package whose backend runs */
  pkg: string;
  /** the tfjs backend name: tensorflow or cpu */
  backend: string;
  /** whether libtensorflow placed its kernels on a CUDA device */
  gpu: boolean;
  /** one line for the user: which backend and why */
  reason: string;
}

/** The native tfjs packages in order of preference, and what each brings. */
export const TFJS_NATIVE = [
  { pkg: "@tensorflow/tfjs-node-gpu", what: "libtensorflow with CUDA" },
  { pkg: "@tensorflow/tfjs-node", what: "libtensorflow on the CPU" },
] as const;

const require = createRequire(import.meta.url);

/** whether a package is installed, without loading it */
export function installed(pkg: string): boolean {
  try {
    require.resolve(`${pkg}/package.json`);
    return true;
  } catch {
    return false;
  }
}

export const ENGINES = ["auto", "native", "tfjs"] as const;
export type EngineName = (typeof ENGINES)[number];

/** The tfjs backend to train on, or null for the native engine: tfjs when asked; for auto, when tfjs-node-gpu is installed and finds a GPU. */
export async function resolveTfjs(want: EngineName): Promise<TfjsChoice | null> {
  if (want === "native") return null;
  if (want === "tfjs") return loadTfjs();
  if (!installed(TFJS_NATIVE[0].pkg)) return null;
  const t = await loadTfjs();
  return t.gpu ? t : null;
}

/** The CUDA 11.2 / cuDNN 8.1 libraries libtensorflow 2.9.1 (tfjs-node-gpu 4.22) opens, and where the loader finds them. */
export const CUDA_LIBS = ["libcudart.so.11.0", "libcublas.so.11", "libcublasLt.so.11", "libcufft.so.10", "libcurand.so.10", "libcusolver.so.11", "libcusparse.so.11", "libcudnn.so.8"];

/** For `sae doctor`: the tfjs packages present, the GPU found or why none, and what train.engine: auto picks. */
export async function tfjsReport(): Promise<{ backends: string; gpu: string; auto: string }> {
  const version = (pkg: string) => (require(`${pkg}/package.json`) as { version: string }).version;
  const present = [...TFJS_NATIVE.map((t) => t.pkg), "@tensorflow/tfjs"].map((pkg) => (installed(pkg) ? `${pkg} ${version(pkg)}` : `${pkg} not installed`));
  const gpuPkg = TFJS_NATIVE[0].pkg;
  const driver = fs.existsSync("/proc/driver/nvidia/version") ? fs.readFileSync("/proc/driver/nvidia/version", "utf8").split("\n")[0].replace(/\s+/g, " ").trim() : null;
  const missing = CUDA_LIBS.filter((lib) => !findLibrary(lib));
  const libs = missing.length ? `missing ${missing.join(", ")} (CUDA 11.2 and cuDNN 8.1, on LD_LIBRARY_PATH or in ldconfig)` : "the CUDA 11.2 and cuDNN 8.1 libraries are found";
  let gpu: string;
  if (!installed(gpuPkg)) gpu = `none: ${gpuPkg} is not installed (npm drops it when its install cannot download libtensorflow); NVIDIA driver: ${driver ?? "none found"}; ${libs}`;
  else {
    const t = await loadTfjs();
    gpu = t.gpu ? `found: TensorFlow runs on a CUDA device through ${t.pkg}` : t.pkg === gpuPkg ? `none: ${gpuPkg} loaded but TensorFlow found no usable CUDA device; NVIDIA driver: ${driver ?? "none found"}; ${libs}` : `none: ${gpuPkg} did not load (${t.reason})`;
  }
  const auto = (await resolveTfjs("auto")) ? "tfjs (a GPU is usable)" : "native (tfjs only when tfjs-node-gpu finds a GPU; --engine tfjs forces it)";
  return { backends: present.join("; "), gpu, auto };
}

/** whether the dynamic loader can find a shared library: LD_LIBRARY_PATH, then the ldconfig cache */
function findLibrary(name: string): boolean {
  for (const dir of (process.env.LD_LIBRARY_PATH ?? "").split(":").filter(Boolean)) if (fs.existsSync(path.join(dir, name))) return true;
  try {
    return execFileSync("ldconfig", ["-p"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).includes(name);
  } catch {
    return false;
  }
}

let loaded: Promise<TfjsChoice> | null = null;

/** Loads the best tfjs backend once (later calls return the same). */
export function loadTfjs(): Promise<TfjsChoice> {
  loaded ??= load();
  return loaded;
}

async function load(): Promise<TfjsChoice> {
  const skipped: string[] = [];
  for (const { pkg, what } of TFJS_NATIVE) {
    if (!installed(pkg)) {
      skipped.push(`${pkg} not installed`);
      continue;
    }
    try {
      const mod = (await import(pkg)) as Tf & { default?: Tf };
      const tf = mod.default ?? mod;
      if (!(await tf.setBackend("tensorflow"))) throw new Error("its tensorflow backend did not initialise");
      const gpu = Boolean((tf.backend() as unknown as { isUsingGpuDevice?: boolean }).isUsingGpuDevice);
      const where = gpu ? "on the GPU" : pkg.endsWith("-gpu") ? "on the CPU: TensorFlow found no usable CUDA device (see `sae doctor`)" : "on the CPU";
      return { tf, pkg, backend: "tensorflow", gpu, reason: `tfjs engine, ${pkg} (${what}) ${where}` };
    } catch (e) {
      skipped.push(`${pkg} did not load: ${String((e as Error).message ?? e).split("\n")[0]}`);
    }
  }
  let tf: Tf;
  try {
    const mod = (await import("@tensorflow/tfjs")) as Tf & { default?: Tf };
    tf = mod.default ?? mod;
  } catch (e) {
    throw new SaeError("runtime", `the tfjs engine cannot load @tensorflow/tfjs: ${(e as Error).message.split("\n")[0]}`, "run `npm ci` in the sae checkout, or use --engine native");
  }
  // PROD: no debug checks, and no tfjs banner (the one line below says it instead)
  tf.env().set("PROD", true);
  await tf.setBackend("cpu");
  return { tf, pkg: "@tensorflow/tfjs", backend: "cpu", gpu: false, reason: `tfjs engine, pure-JavaScript CPU backend, slow (${skipped.join("; ")})` };
}

/**
 * The Ops of src/sae/ops.ts over tf.Tensor. Selections and comparisons run inside custom-gradient
 * nodes whose gradient is zero: tfjs registers no gradient for Greater, Equal or TopK, and work
 * done inside a custom-gradient node's forward is not taped, so autodiff never meets them.
 */
export function tfOps(tf: Tf) {
  type T = Tensor;
  const f32 = (t: T) => (t.dtype === "float32" ? t : tf.cast(t, "float32"));
  /** fn's value as a taped node with a zero gradient for every input */
  const noGrad = (fn: (...xs: T[]) => T) =>
    tf.customGrad(((...args: (T | ((s: T[]) => void))[]) => {
      const xs = args.filter((a): a is T => a instanceof tf.Tensor);
      return { value: tf.tidy(() => fn(...xs)), gradFunc: () => xs.map((x) => tf.zeros(x.shape)) };
    }) as CustomGradientFunc) as (...xs: T[]) => T;
  /** g summed down to shape (undoes broadcasting) */
  const reduceTo = (g: T, shape: number[]): T => {
    let r = g;
    while (r.rank > shape.length) r = tf.sum(r, 0);
    for (let a = 0; a < shape.length; a++) if (shape[a] === 1 && r.shape[a] !== 1) r = tf.sum(r, a, true);
    return r;
  };
  const inBand = (z: T, theta: T, eps: number) => f32(tf.less(tf.abs(tf.sub(z, theta)), eps / 2)); // K((z − θ)/ε)
  const steCache = new Map<string, (z: T, theta: T) => T>();
  /** a straight-through node z, θ → value(z, θ) with ∂/∂z = dz(z, θ)·dy and ∂/∂θ = −(scale(θ)/ε)·K·dy */
  const ste = (kind: "step" | "jump", eps: number) => {
    const key = `${kind}:${eps}`;
    let fn = steCache.get(key);
    if (!fn) {
      fn = tf.customGrad(((z: T, theta: T, save: (s: T[]) => void) => {
        save([z, theta]);
        const on = f32(tf.greater(z, theta));
        return {
          value: kind === "step" ? on : tf.mul(z, on),
          gradFunc: (dy: T, [zs, th]: T[]) => {
            const k = tf.mul(dy, inBand(zs, th, eps));
            const dTheta = kind === "step" ? tf.mul(reduceTo(k, th.shape), -1 / eps) : tf.mul(tf.mul(reduceTo(k, th.shape), th), -1 / eps);
            const dz = kind === "step" ? tf.zerosLike(zs) : tf.mul(dy, f32(tf.greater(zs, th)));
            return [dz, dTheta];
          },
        };
      }) as unknown as CustomGradientFunc) as (z: T, theta: T) => T;
      steCache.set(key, fn);
    }
    return fn;
  };
  const whereGrad = tf.customGrad(((cond: T, a: T, b: T, save: (s: T[]) => void) => {
    const c = tf.notEqual(cond, 0);
    save([f32(c)]);
    return {
      value: tf.where(c, a, b),
      gradFunc: (dy: T, [cf]: T[]) => [tf.zeros(cond.shape), reduceTo(tf.mul(dy, cf), a.shape), reduceTo(tf.mul(dy, tf.sub(1, cf)), b.shape)],
    };
  }) as unknown as CustomGradientFunc) as (cond: T, a: T, b: T) => T;

  /**
   * 1 at the positions tf.topk picks: tfjs's CPU kernel and TensorFlow's TopKV2 both put the lower
   * index first among equal values, which is the tie rule of the fast path. a [B, n] → a mask [B, n].
   */
  const topkPositions = (a: T, k: number): T => {
    const [B, n] = a.shape;
    const rows = tf.mul(tf.reshape(tf.range(0, B, 1, "int32"), [B, 1]), tf.scalar(n, "int32"));
    const flat = tf.reshape(tf.add(tf.topk(a, k).indices, rows), [B * k, 1]);
    return tf.reshape(tf.scatterND(flat, tf.ones([B * k]), [B * n]), [B, n]);
  };
  /** per row: 1 at the k largest of a among allowed columns */
  const topkMaskFn = (a: T, k: number, allowed: T | null): T => {
    if (!allowed) return topkPositions(a, k);
    const ok = tf.notEqual(allowed, 0);
    return tf.mul(topkPositions(tf.where(ok, a, tf.fill(a.shape, -Infinity)), k), f32(ok)); // fewer allowed than k: all of them
  };
  const noGradCache = new Map<string, (...xs: T[]) => T>();
  const cachedNoGrad = (key: string, fn: (...xs: T[]) => T) => {
    let g = noGradCache.get(key);
    if (!g) noGradCache.set(key, (g = noGrad(fn)));
    return g;
  };

  return {
    constant: (values: ArrayLike<number>, shape: number[]): T => tf.tensor(Float32Array.from(values), shape, "float32"),
    shape: (a: T): number[] => a.shape,
    matmul: (a: T, b: T, transposeA = false, transposeB = false): T => tf.matMul(a, b, transposeA, transposeB),
    add: (a: T, b: T | number): T => tf.add(a, b),
    sub: (a: T, b: T | number): T => tf.sub(a, b),
    mul: (a: T, b: T | number): T => tf.mul(a, b),
    div: (a: T, b: T | number): T => tf.div(a, b),
    relu: (a: T): T => tf.relu(a),
    exp: (a: T): T => tf.exp(a),
    tanh: (a: T): T => tf.tanh(a),
    square: (a: T): T => tf.square(a),
    sum: (a: T, axis?: 0 | 1): T => tf.sum(a, axis),
    mean: (a: T, axis?: 0 | 1): T => tf.mean(a, axis),
    rowNorms: (a: T): T => tf.sqrt(tf.sum(tf.square(a), 1)),
    greater: (a: T, b: T | number): T => (typeof b === "number" ? cachedNoGrad(`gt:${b}`, (x) => f32(tf.greater(x, b)))(a) : cachedNoGrad("gt", (x, y) => f32(tf.greater(x, y)))(a, b)),
    where: (cond: T, a: T, b: T): T => whereGrad(cond, a, b),
    minWhere: (a: T, mask: T): T => cachedNoGrad("minWhere", (x, m) => tf.min(tf.where(tf.notEqual(m, 0), x, tf.fill(x.shape, Infinity))))(a, mask),
    stopGradient: (a: T): T => cachedNoGrad("sg", (x) => tf.clone(x))(a),
    topkMask: (a: T, k: number, allowed?: T | null): T => (allowed ? cachedNoGrad(`topkA:${k}`, (x, m) => topkMaskFn(x, k, m))(a, allowed) : cachedNoGrad(`topk:${k}`, (x) => topkMaskFn(x, k, null))(a)),
    batchTopkMask: (a: T, total: number): T =>
      cachedNoGrad(`btopk:${total}`, (x) => {
        // the top `total` of the flattened batch (ties to the earlier row-major position), positives only
        const flat = tf.reshape(x, [1, -1]);
        return tf.reshape(tf.mul(topkPositions(flat, total), f32(tf.greater(flat, 0))), x.shape);
      })(a),
    heavisideSte: (z: T, theta: T, eps: number): T => ste("step", eps)(z, theta),
    jumpReluSte: (z: T, theta: T, eps: number): T => ste("jump", eps)(z, theta),
  };
}

export type TfOps = ReturnType<typeof tfOps>;
