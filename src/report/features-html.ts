// features.html (docs/features.md): one self-contained page, no network. An index of every latent
// (sorted by the chosen statistic, filtered by a search on the latent id) and one section per
// selected latent, shown alone when its anchor #latent-N is the page's target (CSS :target, so a
// section is a page of its own and works without script). A section holds the statistics, an SVG
// histogram, the top-activating examples and examples from each activation quantile; per data
// kind the token contexts shaded by activation and the promoted/suppressed tokens, the decoder
// row and the digits as PNG images (MNIST), or the best-matching true feature (synthetic).
import type { ExampleOut, FeatureDocument, LatentPage } from "../eval/features.ts";
import { divergingPng, greyPng, pngDataUri } from "./features-png.ts";
import { count } from "../text.ts";

/** MNIST pixels: the decoder row of latent i and held-out row r, [28·28] each */
export interface FeatureImages { side: number; decoderRow(i: number): ArrayLike<number>; inputRow(row: number): ArrayLike<number> }

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** numbers for people: 4 significant digits, exponent outside [1e-3, 1e5) */
export function num(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(2);
  return Number(v.toPrecision(4)).toString();
}

const pct = (v: number) => `${num(100 * v)}%`;

/** the highlight of an activation a of a latent whose max is m: orange, alpha a/m (rounded to 1/100) */
export function shade(a: number, m: number): string {
  const alpha = m > 0 ? Math.round((100 * Math.min(1, a / m))) / 100 : 0;
  return `rgba(255,128,0,${alpha})`;
}

/** a token's text as shown: newlines as ↵, other control characters as \\xNN */
function showToken(t: string): string {
  return t.replace(/\n/g, "↵").replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

const CSS = `
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fff}
header,main{padding:12px 20px}header{background:#f4f4f6;border-bottom:1px solid #ddd}
h1{font-size:18px;margin:0 0 4px}h2{font-size:16px;margin:12px 0 6px}h3{font-size:14px;margin:12px 0 4px}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}
th{cursor:pointer;background:#fafafa;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
.summary td{text-align:left}.muted{color:#777}
#q{font-size:14px;padding:3px 6px;width:10em}#msg{margin-left:10px;color:#a40}
.latent{display:none;scroll-margin-top:120px}.latent:target{display:block}body:has(.latent:target) #index{display:none}
.ex{font:13px/1.6 ui-monospace,monospace;white-space:pre;overflow:hidden;text-overflow:ellipsis}
.ex .v{display:inline-block;width:5.5em;text-align:right;margin-right:8px;color:#555}
.ex span{border-radius:2px}.ex .hit{outline:1.5px solid #b00;font-weight:bold}
.ex .out{color:#aaa}.cols{display:flex;gap:40px;flex-wrap:wrap}
.digits img,.dec{image-rendering:pixelated;border:1px solid #ccc;margin:2px}
.digits figure{display:inline-block;margin:2px;text-align:center;font-size:11px;color:#555}
.digits figure img{width:56px;height:56px}.dec{width:168px;height:168px}
svg text{font:10px system-ui,sans-serif;fill:#555}
`;

// search by latent id (filters the index; Enter opens the latent's section) and sort on a header click
const SCRIPT = `
(function(){
  var q=document.getElementById('q'),msg=document.getElementById('msg'),rows=[].slice.call(document.querySelectorAll('#idx tbody tr'));
  function filter(){var v=q.value.trim();rows.forEach(function(r){r.style.display=!v||r.dataset.id.indexOf(v)===0?'':'none';});msg.textContent='';}
  q.addEventListener('input',filter);
  q.addEventListener('keydown',function(e){
    if(e.key!=='Enter')return;var v=q.value.trim();
    if(document.getElementById('latent-'+v))location.hash='latent-'+v;
    else msg.textContent=/^[0-9]+$/.test(v)?'latent '+v+' has no section: sae features --latents '+v+' makes one':'type a latent id';
  });
  var body=document.querySelector('#idx tbody');
  [].forEach.call(document.querySelectorAll('#idx th'),function(th,c){
    th.addEventListener('click',function(){
      var up=th.dataset.dir!=='desc';th.dataset.dir=up?'desc':'asc';
      rows.sort(function(a,b){var x=+a.children[c].dataset.v,y=+b.children[c].dataset.v;return up?y-x:x-y;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
})();
`;

/** the histogram of a latent's firing activations as an inline SVG bar chart */
function histogramSvg(h: LatentPage["histogram"]): string {
  const W = 320, Hh = 90, pad = 18, n = h.counts.length, top = Math.max(1, ...h.counts);
  const bw = (W - 2 * pad) / n;
  const bars = h.counts.map((c, k) => {
    const bh = ((Hh - 2 * pad) * c) / top;
    return `<rect x="${(pad + k * bw).toFixed(1)}" y="${(Hh - pad - bh).toFixed(1)}" width="${Math.max(1, bw - 1).toFixed(1)}" height="${bh.toFixed(1)}" fill="#f80"><title>${c}</title></rect>`;
  }).join("");
  return `<svg width="${W}" height="${Hh}" viewBox="0 0 ${W} ${Hh}" role="img" aria-label="activation histogram">`
    + `<line x1="${pad}" y1="${Hh - pad}" x2="${W - pad}" y2="${Hh - pad}" stroke="#999"/>${bars}`
    + `<text x="${pad}" y="${Hh - 4}">0</text><text x="${W - pad}" y="${Hh - 4}" text-anchor="end">${num(h.max)}</text>`
    + `<text x="${pad}" y="12">tallest bar: ${count(top, "token")}</text></svg>`;
}

function exampleLine(x: ExampleOut, max: number, images: FeatureImages | null): string {
  const v = `<span class="v">${num(x.activation)}</span>`;
  if (x.context) {
    const c = x.context;
    const toks = c.tokens.map((t, k) => {
      const label = c.text ? showToken(c.text[k]) : `#${t} `;
      const a = c.acts[k];
      // only tokens where the latent fires (and the example's own) carry markup: pages stay small
      if (k === c.target) return `<span class="hit" style="background:${shade(a ?? 0, max)}" title="${num(a ?? 0)}">${esc(label)}</span>`;
      if (a === null) return `<span class="out">${esc(label)}</span>`;
      return a > 0 ? `<span style="background:${shade(a, max)}" title="${num(a)}">${esc(label)}</span>` : esc(label);
    }).join("");
    return `<div class="ex" data-row="${x.row}">${v}${toks}<span class="muted">  seq ${c.sequence} pos ${c.position}</span></div>`;
  }
  if (images) return `<figure data-row="${x.row}"><img src="${pngDataUri(greyPng(images.inputRow(x.row), images.side, images.side))}" alt="row ${x.row}"><figcaption>${x.label ?? ""} · ${num(x.activation)}</figcaption></figure>`;
  return `<div class="ex" data-row="${x.row}">${v}row ${x.row}</div>`;
}

function examples(list: ExampleOut[], max: number, images: FeatureImages | null): string {
  const inner = list.map((x) => exampleLine(x, max, images)).join("\n");
  return images ? `<div class="digits">${inner}</div>` : inner;
}

function tokenTable(title: string, list: { token: number; value: number; text?: string }[]): string {
  const rows = list.map((t) => `<tr><td class="ex">${esc(t.text !== undefined ? showToken(t.text) : `#${t.token}`)}</td><td>${num(t.value)}</td></tr>`).join("");
  return `<div><h3>${title}</h3><table>${rows}</table></div>`;
}

function section(doc: FeatureDocument, p: LatentPage, images: FeatureImages | null): string {
  const parts = [`<section class="latent" id="latent-${p.id}" data-latent="${p.id}">`, `<p><a href="#">← index</a></p>`,
    `<h2>Latent ${p.id}</h2>`,
    `<p>fires on ${pct(p.firing_rate)} of ${doc.summary.tokens} tokens (${p.fires}); mean activation where it fires ${num(p.mean_activation)}, max ${num(p.max_activation)}; decoder norm ${num(p.decoder_norm)}</p>`];
  const top: string[] = p.fires > 0 ? [histogramSvg(p.histogram)] : [`<p class="muted">It fires on none of these tokens (dead here); more <code>--tokens</code> may find some.</p>`];
  if (images) {
    const { png, scale } = divergingPng(images.decoderRow(p.id), images.side, images.side);
    top.unshift(`<div><h3>Decoder row</h3><img class="dec" data-kind="decoder" data-scale="${scale}" src="${pngDataUri(png)}" alt="decoder row ${p.id}"><div class="muted">red +, blue −, ±${num(scale)}</div></div>`);
  }
  if (p.logits) top.push(tokenTable("Promotes", p.logits.promoted), tokenTable("Suppresses", p.logits.suppressed));
  if (p.ground_truth) {
    const g = p.ground_truth;
    top.push(`<div><h3>Ground truth</h3><p>best match: feature ${g.feature}, cosine ${num(g.cosine)}<br>second: feature ${g.second}, cosine ${num(g.second_cosine)}<br>the two together: cosine ${num(g.span_cosine)}<br><b>${g.kind}</b></p></div>`);
  }
  parts.push(`<div class="cols">${top.join("")}</div>`);
  if (p.fires > 0) parts.push(`<h3>Top ${p.top.length} activations</h3>`, `<div class="examples top">${examples(p.top, p.max_activation, images)}</div>`);
  for (const q of p.quantiles) {
    parts.push(`<h3>Quantile ${num(100 * q.q_lo)}–${num(100 * q.q_hi)}% <span class="muted">(${q.count} tokens, activations ${num(q.lo)}–${num(q.hi)})</span></h3>`,
      `<div class="examples quantile">${examples(q.examples, p.max_activation, images)}</div>`);
  }
  parts.push("</section>");
  return parts.join("\n");
}

function summaryTable(doc: FeatureDocument): string {
  const s = doc.summary, m = s.max_activation;
  const rows: [string, string][] = [
    ["tokens", String(s.tokens)],
    ["dead", pct(s.dead_frac)],
    ["firing on > 10% of tokens", pct(s.frac_firing_gt_10pct)],
    ["firing on > 1% of tokens", pct(s.frac_firing_gt_1pct)],
    ["max activation (min / p10 / median / p90 / max)", [m.min, m.p10, m.p50, m.p90, m.max].map(num).join(" / ")],
  ];
  if (s.ground_truth) {
    rows.push(["matching one true feature (cos > 0.9)", pct(s.ground_truth.frac_matched_0_9)]);
    rows.push(["mixtures of two true features", pct(s.ground_truth.frac_mixture)]);
  }
  return `<table class="summary">${rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join("")}</table>`;
}

export function renderFeaturesHtml(doc: FeatureDocument, images: FeatureImages | null = null): string {
  const pages = new Set(doc.latents.map((p) => p.id));
  const st = doc.stats;
  const cos = st.cosine;
  const head = `<tr><th>latent</th><th>firing rate</th><th>mean act.</th><th>max act.</th>${cos ? "<th>best cosine</th>" : ""}</tr>`;
  const rows = doc.order.map((i) => {
    const id = pages.has(i) ? `<a href="#latent-${i}">${i}</a>` : `<span class="muted">${i}</span>`;
    return `<tr data-id="${i}"><td data-v="${i}">${id}</td><td data-v="${st.firing_rate[i]}">${pct(st.firing_rate[i])}</td><td data-v="${st.mean_activation[i]}">${num(st.mean_activation[i])}</td><td data-v="${st.max_activation[i]}">${num(st.max_activation[i])}</td>${cos ? `<td data-v="${cos[i]}">${num(cos[i])}</td>` : ""}</tr>`;
  }).join("\n");
  const d = doc.data;
  const source = d.model ? ` · ${esc(d.model.split("/").pop()!)} layer ${d.layer} ${esc(d.site ?? "")}` : "";
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>features · ${esc(doc.run)}</title><style>${CSS}</style></head>
<body>
<header><h1>Features of ${esc(doc.run)}</h1>
<div class="muted">${esc(doc.variant)}, D = ${doc.d_in}, H = ${doc.d_sae} · ${esc(d.kind.replace("_", " "))}${source} · ${esc(doc.options.selection)}</div></header>
<main>
<div id="index">
<h2>Summary</h2>${summaryTable(doc)}
<h2>Latents <span class="muted">(sorted by ${esc(doc.options.sort)}; ${pages.size} with a section, linked)</span></h2>
<p><input id="q" placeholder="latent id" aria-label="latent id"><span id="msg"></span></p>
<table id="idx"><thead>${head}</thead><tbody>
${rows}
</tbody></table>
</div>
${doc.latents.map((p) => section(doc, p, images)).join("\n")}
</main>
<script>${SCRIPT}</script>
</body></html>
`;
}
