// Rendering without a browser: Vega-Lite compiles a spec to Vega, Vega's headless view (renderer
// "none") draws it as SVG, and resvg rasterises the SVG to PNG with the DejaVu Sans font shipped in
// the dejavu-fonts-ttf package (system fonts are not consulted, so the PNG is the same everywhere).
import { createRequire } from "node:module";
import path from "node:path";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import { Resvg } from "@resvg/resvg-js";
import { FONT } from "./plots.ts";

const require = createRequire(import.meta.url);
/** the font file resvg draws text with */
export const FONT_FILE = path.join(path.dirname(require.resolve("dejavu-fonts-ttf/package.json")), "ttf", "DejaVuSans.ttf");

export interface Rendered {
  svg: string;
  width: number;
  height: number;
  /** the Vega view (its scales map data values to the SVG's coordinates) */
  view: vega.View;
}

export async function renderSvg(spec: TopLevelSpec): Promise<Rendered> {
  const vg = compile(spec).spec;
  // no loader: every plot's data is inline, so nothing is fetched
  const view = new vega.View(vega.parse(vg), { renderer: "none", logLevel: vega.Warn });
  await view.runAsync();
  const svg = await view.toSVG();
  const m = /<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"/.exec(svg);
  return { svg, width: m ? Number(m[1]) : view.width(), height: m ? Number(m[2]) : view.height(), view };
}

/** The SVG as a PNG, `scale` pixels per SVG unit. */
export function svgToPng(svg: string, scale: number): Buffer {
  const r = new Resvg(svg, {
    fitTo: { mode: "zoom", value: scale },
    background: "white",
    font: { fontFiles: [FONT_FILE], loadSystemFonts: false, defaultFontFamily: FONT, sansSerifFamily: FONT },
  });
  return r.render().asPng();
}

/** Prefixes the SVG's element ids (clip paths, gradients) so that several SVGs can share one HTML page. */
export function namespaceIds(svg: string, prefix: string): string {
  return svg
    .replace(/\bid="([^"]+)"/g, (_m, id: string) => `id="${prefix}-${id}"`)
    .replace(/url\(#([^)]+)\)/g, (_m, id: string) => `url(#${prefix}-${id})`)
    .replace(/href="#([^"]+)"/g, (_m, id: string) => `href="#${prefix}-${id}"`);
}
