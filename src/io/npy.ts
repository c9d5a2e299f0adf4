// NumPy .npy files (format versions 1–3: magic "\x93NUMPY", version, header length, a Python-dict
// header {'descr', 'fortran_order', 'shape'} padded to 64 bytes, then the raw array). Only the
// header is read here; the data is read in pieces by the stores.
import fs from "node:fs";
import { writeAtomicWith } from "./atomic.ts";
import { SaeError } from "../errors.ts";

export interface NpyHeader {
  /** numpy type string without the byte order, e.g. "f4", "f2", "u2", "i4" */
  kind: string;
  shape: number[];
  /** byte offset of the data */
  offset: number;
  itemBytes: number;
}

/** the longest .npy header read (numpy writes under 100 bytes for the arrays this tool reads) */
export const MAX_NPY_HEADER = 1 << 20;

export function readNpyHeader(file: string): NpyHeader {
  const fd = openOrExplain(file);
  try {
    const bad = (what: string) => new SaeError("data", `${file} is not a valid .npy file: ${what}`, "write it with numpy.save (a C-order array of float32, float16 or bfloat16-as-uint16)");
    let size: number;
    const head = Buffer.alloc(12);
    let got: number;
    try {
      size = fs.fstatSync(fd).size;
      got = fs.readSync(fd, head, 0, 12, 0);
    } catch (err) {
      throw new SaeError("data", `cannot read ${file}: ${(err as NodeJS.ErrnoException).code === "EISDIR" ? "it is a folder, not a file" : (err as NodeJS.ErrnoException).code ?? (err as Error).message}`, "give the path of a .npy file");
    }
    if (got < 10 || head.toString("latin1", 0, 6) !== "\x93NUMPY") throw bad("it does not start with the .npy magic bytes");
    const major = head[6];
    if (major < 1 || major > 3) throw bad(`format version ${major}.${head[7]}; numpy writes versions 1 to 3`);
    if (major > 1 && got < 12) throw bad("the header is cut short");
    const hlen = major === 1 ? head.readUInt16LE(8) : head.readUInt32LE(8);
    const start = major === 1 ? 10 : 12;
    if (hlen > MAX_NPY_HEADER) throw bad(`its header length is ${hlen} bytes (numpy writes a few hundred at most; this reader takes up to ${MAX_NPY_HEADER})`);
    if (start + hlen > size) throw bad(`its header length ${hlen} runs past the end of the file (${size} bytes)`);
    const text = Buffer.alloc(hlen);
    if (fs.readSync(fd, text, 0, hlen, start) < hlen) throw bad("the header is cut short");
    const h = text.toString("latin1");
    const descr = /'descr':\s*'([^']+)'/.exec(h)?.[1];
    const fortran = /'fortran_order':\s*(True|False)/.exec(h)?.[1];
    const shapeText = /'shape':\s*\(([^)]*)\)/.exec(h)?.[1];
    if (!descr || !fortran || shapeText === undefined) throw bad(`cannot parse the header ${JSON.stringify(h.trim().slice(0, 200))}`);
    if (fortran === "True") throw bad("the array is in Fortran order");
    if (descr[0] === ">") throw bad(`the data is big-endian (${descr})`);
    const kind = descr.replace(/^[<|=]/, "");
    const dims = shapeText.split(",").map((x) => x.trim()).filter((x) => x !== "");
    // Python ints, possibly with an L suffix (numpy 1.x on Python 2): nothing else is a shape
    if (dims.some((x) => !/^\d+L?$/.test(x))) throw bad(`its shape (${shapeText.trim().slice(0, 80)}) is not a tuple of non-negative integers`);
    const shape = dims.map((x) => Number(x.replace(/L$/, "")));
    if (shape.some((x) => !Number.isSafeInteger(x))) throw bad(`its shape (${shapeText.trim()}) has a dimension too large to address`);
    const itemBytes = Number(/^[a-zA-Z](\d+)$/.exec(kind)?.[1] ?? NaN);
    return { kind, shape, offset: start + hlen, itemBytes };
  } finally {
    fs.closeSync(fd);
  }
}

/** A .npy header for a C-order little-endian array (version 1), padded so the data starts at a multiple of 64. */
export function npyHeader(descr: string, shape: number[]): Buffer {
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(", ");
  let dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${dims}), }`;
  const total = 10 + dict.length + 1;
  dict += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const head = Buffer.alloc(10);
  head.write("\x93NUMPY", 0, "latin1");
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(dict.length, 8);
  return Buffer.concat([head, Buffer.from(dict, "latin1")]);
}

/** Writes a whole array as .npy, atomically (io/atomic.ts). */
export function writeNpy(file: string, data: Float32Array | Int32Array, shape: number[]): void {
  writeAtomicWith(file, (fd) => {
    fs.writeSync(fd, npyHeader(data instanceof Float32Array ? "<f4" : "<i4", shape));
    fs.writeSync(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  });
}

export function openOrExplain(file: string): number {
  try {
    return fs.openSync(file, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SaeError("data", `cannot open ${file}: ${code === "ENOENT" ? "no such file" : code ?? (err as Error).message}`, "check the path (relative paths in a config are relative to the config file's folder)");
  }
}
