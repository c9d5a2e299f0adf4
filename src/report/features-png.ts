// Small raster images for feature pages (docs/features.md), encoded by pngjs: a decoder row drawn
// in a diverging palette (blue < 0 < red, white at 0, scaled by the row's largest |value|), and an
// input row in grey levels (MNIST pixels in [0, 1], ink dark on white).
import { PNG } from "pngjs";

/**
 * RGB of t ∈ [−1, 1]: t ≥ 0 → (255, 255(1 − t), 255(1 − t)), t < 0 → (255(1 + t), 255(1 + t), 255).
 * Invertible: red channel 255 means t = 1 − G/255, else t = R/255 − 1.
 */
export function diverging(t: number): [number, number, number] {
  const c = Math.max(-1, Math.min(1, t));
  const fade = Math.round(255 * (1 - Math.abs(c)));
  return c >= 0 ? [255, fade, fade] : [fade, fade, 255];
}

function encode(w: number, h: number, rgb: (i: number) => [number, number, number]): Buffer {
  const png = new PNG({ width: w, height: h });
  for (let i = 0; i < w * h; i++) {
    const [r, g, b] = rgb(i);
    png.data[4 * i] = r;
    png.data[4 * i + 1] = g;
    png.data[4 * i + 2] = b;
    png.data[4 * i + 3] = 255;
  }
  return PNG.sync.write(png, { colorType: 2 });
}

/** values [h·w] row-major as a diverging image; scale = the largest |value| (the colour of ±1) */
export function divergingPng(values: ArrayLike<number>, w: number, h: number): { png: Buffer; scale: number } {
  let scale = 0;
  for (let i = 0; i < w * h; i++) scale = Math.max(scale, Math.abs(values[i]));
  const s = scale > 0 ? scale : 1;
  return { png: encode(w, h, (i) => diverging(values[i] / s)), scale };
}

/** values [h·w] in [0, 1] as grey levels, 0 white and 1 black */
export function greyPng(values: ArrayLike<number>, w: number, h: number): Buffer {
  return encode(w, h, (i) => {
    const v = Math.round(255 * (1 - Math.max(0, Math.min(1, values[i]))));
    return [v, v, v];
  });
}

export function pngDataUri(png: Buffer): string {
  return `data:image/png;base64,${png.toString("base64")}`;
}
