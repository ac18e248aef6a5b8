import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { openApiDocument } from '@handoff/shared';
import { routePattern } from '../../server/src/http/access-log.js';

type Doc = { paths: Record<string, Record<string, { operationId: string; responses: Record<string, { content?: Record<string, { schema?: object }> }> }>> };

/**
 * Checks REST responses against the served OpenAPI document: the route and status must be
 * declared, the media type too, and a JSON body must validate against its schema (JSON
 * Schema 2020-12, as OpenAPI 3.1 says). Formats are zod's business on the way in; here only
 * the shape is checked.
 */
export class ContractChecker {
  readonly doc = openApiDocument({ version: 'test' }) as unknown as Doc;
  readonly called = new Set<string>();
  readonly failures: string[] = [];
  private readonly ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
  private readonly cache = new Map<string, ValidateFunction>();

  check(method: string, url: string, status: number, contentType: string | null, body: unknown): void {
    const path = new URL(url, 'http://x').pathname;
    const pattern = routePattern(method, path);
    const op = this.doc.paths[pattern]?.[method.toLowerCase()];
    const where = `${method} ${pattern} → ${status}`;
    if (!op) return void this.failures.push(`${where}: route not documented`);
    this.called.add(`${op.operationId} ${status}`);
    const declared = op.responses[String(status)];
    if (!declared) return void this.failures.push(`${where}: status not documented`);
    const type = (contentType ?? '').split(';')[0]!.trim();
    const media = Object.keys(declared.content ?? {}).find((m) => m.split(';')[0] === type);
    if (!media) return void this.failures.push(`${where}: media type ${type} not documented (${Object.keys(declared.content ?? {}).join(', ')})`);
    const schema = declared.content![media]!.schema;
    if (!schema || type !== 'application/json') return;
    const key = `${where} ${media}`;
    let validate = this.cache.get(key);
    if (!validate) this.cache.set(key, (validate = this.ajv.compile(schema)));
    if (!validate(body)) this.failures.push(`${where}: body does not match its schema: ${this.ajv.errorsText(validate.errors)} — ${JSON.stringify(body).slice(0, 300)}`);
  }

  /** A REST call whose response is checked against the document. */
  async call(baseUrl: string, token: string | null, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
    const h: Record<string, string> = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const res = await fetch(`${baseUrl}${path}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    const contentType = res.headers.get('content-type');
    const parsed: unknown = contentType?.startsWith('application/json') ? JSON.parse(text) : text;
    this.check(method, path, res.status, contentType, parsed);
    if (!res.headers.get('x-request-id')) this.failures.push(`${method} ${path} → ${res.status}: no X-Request-Id header`);
    return { status: res.status, body: parsed as any, headers: res.headers };
  }
}
