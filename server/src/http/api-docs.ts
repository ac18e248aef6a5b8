import { Router } from 'express';
import { openApiDocument } from '@handoff/shared';

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

type Doc = { info: { title: string; version: string; description: string }; paths: Record<string, Record<string, Op>> };
type Op = {
  operationId: string; summary: string; description?: string; tags: string[]; 'x-handoff-auth': string;
  parameters?: Array<{ name: string; in: string; required: boolean; schema: unknown; description?: string }>;
  requestBody?: { content: Record<string, { schema: unknown }> };
  responses: Record<string, { description: string; content?: Record<string, { schema?: unknown }> }>;
};

/** A self-contained HTML rendering of the document: no script, no CDN (hubs often run air-gapped). */
export function renderDocs(doc: Doc): string {
  const ops = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ path, method, op })));
  const json = (v: unknown) => `<details><summary>schema</summary><pre>${esc(JSON.stringify(v, null, 2))}</pre></details>`;
  const body = ops
    .map(({ path, method, op }) => {
      const params = (op.parameters ?? []).map((p) => `<li><code>${esc(p.name)}</code> (${esc(p.in)}${p.required ? ', required' : ''}) <code>${esc(JSON.stringify(p.schema))}</code> ${esc(p.description ?? '')}</li>`).join('');
      const req = op.requestBody ? `<h4>Request body</h4>${json(op.requestBody.content['application/json']?.schema)}` : '';
      const res = Object.entries(op.responses)
        .map(([status, r]) => `<li><b>${esc(status)}</b> ${esc(r.description)} ${Object.entries(r.content ?? {}).map(([type, c]) => `<code>${esc(type)}</code>${c.schema ? json(c.schema) : ''}`).join(' ')}</li>`)
        .join('');
      return `<section id="${esc(op.operationId)}"><h3><span class="m ${esc(method)}">${esc(method.toUpperCase())}</span> <code>${esc(path)}</code></h3>
<p>${esc(op.summary)} — auth: <code>${esc(op['x-handoff-auth'])}</code>${op.description ? ` — ${esc(op.description)}` : ''}</p>
${params ? `<h4>Parameters</h4><ul>${params}</ul>` : ''}${req}<h4>Responses</h4><ul>${res}</ul></section>`;
    })
    .join('\n');
  const toc = ops.map(({ path, method, op }) => `<li><a href="#${esc(op.operationId)}">${esc(method.toUpperCase())} ${esc(path)}</a></li>`).join('');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(doc.info.title)} ${esc(doc.info.version)}</title>
<style>body{font:14px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}section{border-top:1px solid #ddd;padding:.5rem 0}
.m{display:inline-block;min-width:4rem;font-weight:bold}.get{color:#06c}.post{color:#080}.delete{color:#c00}pre{background:#f6f6f6;padding:.5rem;overflow:auto}</style></head>
<body><h1>${esc(doc.info.title)} <small>${esc(doc.info.version)}</small></h1><p>${esc(doc.info.description)}</p>
<p>Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a> (OpenAPI 3.1).</p><ul>${toc}</ul>${body}</body></html>`;
}

/** `GET /api/openapi.json` and `GET /api/docs`: public, they describe the API and reveal no data. */
export function apiDocsRoutes(version: string): Router {
  const doc = openApiDocument({ version });
  const html = renderDocs(doc as unknown as Doc);
  const router = Router();
  router.get('/openapi.json', (_req, res) => {
    res.json(doc);
  });
  router.get('/docs', (_req, res) => {
    res.type('html').send(html);
  });
  return router;
}
