import { z } from 'zod';
import { apiRoutes, COMMON_ERRORS, isRawBody, type ApiRoute } from './api.js';
import { errorBodySchema, httpStatusOf, type ErrorCode } from './errors.js';

type JsonSchema = Record<string, unknown>;

/** zod → JSON Schema 2020-12 (the dialect of OpenAPI 3.1); requests are described as accepted, responses as sent. */
function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const out = z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any' }) as JsonSchema;
  delete out.$schema;
  return out;
}

/** The error envelope restricted to the codes one status can carry. */
function errorSchema(codes: ErrorCode[]): JsonSchema {
  return jsonSchema(z.object({ error: errorBodySchema.extend({ code: z.enum(codes as [ErrorCode, ...ErrorCode[]]) }) }), 'output');
}

/** Express-style path (`:id`) of an OpenAPI path template (`{id}`). */
export function expressPath(openApiPath: string): string {
  return openApiPath.replace(/\{(\w+)\}/g, ':$1');
}

function parameters(route: ApiRoute): JsonSchema[] {
  const list: JsonSchema[] = [{ name: 'X-Request-Id', in: 'header', required: false, description: 'Your id for this request (1–64 of [A-Za-z0-9._:-]); echoed and logged', schema: { type: 'string', maxLength: 64 } }];
  for (const [where, schema] of [['path', route.params], ['query', route.query]] as const) {
    if (!schema) continue;
    const js = jsonSchema(schema, 'input') as { properties?: Record<string, JsonSchema>; required?: string[] };
    for (const [name, prop] of Object.entries(js.properties ?? {})) {
      const { description, ...rest } = prop;
      list.push({ name, in: where, required: where === 'path' || (js.required ?? []).includes(name), schema: rest, ...(description ? { description } : {}) });
    }
  }
  return list;
}

/** Every response carries the request's id (the caller's, if safe, or a generated one). */
const REQUEST_ID_HEADER = { 'X-Request-Id': { description: 'The request id: the caller’s X-Request-Id if it is 1–64 of [A-Za-z0-9._:-], else generated', schema: { type: 'string' } } };
const RETRY_AFTER_HEADER = { 'Retry-After': { description: 'Seconds to wait before retrying', schema: { type: 'integer' } } };

function operation(route: ApiRoute): JsonSchema {
  const responses: Record<string, JsonSchema> = {};
  for (const [status, body] of Object.entries(route.responses)) {
    responses[status] = isRawBody(body)
      ? { description: body.description, content: { [body.mediaType]: {} } }
      : { description: status === '201' ? 'created' : 'ok', content: { 'application/json': { schema: jsonSchema(body, 'output') } } };
  }
  if (route.alsoRaw) (responses['200']!.content as JsonSchema)[route.alsoRaw.mediaType] = { schema: { type: 'string', description: route.alsoRaw.description } };
  // Error statuses: each lists exactly the codes this route can answer with it.
  const codes = route.auth === 'public' ? [...(route.errors ?? [])] : [...new Set([...(route.errors ?? []), ...(route.auth === 'metrics' ? ['UNAUTHENTICATED', 'FORBIDDEN'] as ErrorCode[] : COMMON_ERRORS)])];
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes) byStatus.set(httpStatusOf[code], [...(byStatus.get(httpStatusOf[code]) ?? []), code]);
  for (const [status, list] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    if (responses[status]) continue; // e.g. /readyz 503 is its own body
    const description = status === 202 ? 'APPROVAL_REQUIRED: an approval request was created; `details.approvalId` names it' : list.join(' | ');
    responses[status] = { description, content: { 'application/json': { schema: errorSchema(list) } } };
  }
  for (const [status, r] of Object.entries(responses)) r.headers = status === '429' || status === '503' ? { ...REQUEST_ID_HEADER, ...RETRY_AFTER_HEADER } : REQUEST_ID_HEADER;
  const op: JsonSchema = {
    operationId: route.operationId,
    summary: route.summary,
    tags: [route.tag],
    'x-handoff-auth': route.auth,
    ...(route.auth === 'public' ? { security: [] } : route.auth === 'metrics' ? { security: [{ bearer: [] }, { metricsToken: [] }] } : {}),
    responses,
  };
  const params = parameters(route);
  if (params.length) op.parameters = params;
  if (route.body) op.requestBody = { required: route.method === 'post' && !route.body.safeParse(undefined).success && !route.body.safeParse({}).success, content: { 'application/json': { schema: jsonSchema(route.body, 'input') } } };
  if (route.auth !== 'public' && route.auth !== 'metrics') op.description = `Requires role \`${route.auth}\` or higher.`;
  return op;
}

/** The OpenAPI 3.1 document of the REST API, generated from `apiRoutes` and their zod schemas. */
export function openApiDocument(opts: { version: string; serverUrl?: string } = { version: '0.1.0' }): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const route of apiRoutes) (paths[route.path] ??= {})[route.method] = operation(route);
  return {
    openapi: '3.1.0',
    info: {
      title: 'Handoff API',
      version: opts.version,
      description: 'Live task-handoff hub. Errors are `{error: {code, message, details?}}`; the status of each code is fixed (see `x-handoff-error-statuses`). Socket clients: see docs/protocol.md.',
    },
    ...(opts.serverUrl ? { servers: [{ url: opts.serverUrl }] } : {}),
    security: [{ bearer: [] }],
    'x-handoff-error-statuses': httpStatusOf,
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'A user or worker API token' },
        metricsToken: { type: 'http', scheme: 'bearer', description: 'HANDOFF_METRICS_TOKEN (only for /metrics)' },
      },
    },
    paths,
  };
}
