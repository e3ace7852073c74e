/**
 * The OpenAPI document and the event schemas under `openapi/` are the source of truth.
 * This module bundles them into one self-contained document (served at /openapi.json and
 * fed to openapi-typescript) and compiles ajv validators from it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

export const OPENAPI_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'openapi');

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const readJson = (path: string): JsonObject => JSON.parse(readFileSync(path, 'utf8'));

/** Rewrites every external `$ref` (to `events/*.json`) into a local `#/components/schemas/…` one. */
function localRef(ref: string): string {
  const match = /^(?:\.\/)?(?:events\/)?([^#]*?)(?:\.json)?(?:#(.*))?$/.exec(ref);
  if (!match) return ref;
  const [, file, fragment] = match;
  if (!file) {
    // A ref internal to common.json: #/$defs/X
    return fragment?.startsWith('/$defs/') ? `#/components/schemas/${fragment.slice('/$defs/'.length)}` : ref;
  }
  if (file === 'common') return `#/components/schemas/${fragment?.slice('/$defs/'.length)}`;
  return `#/components/schemas/${file}`;
}

function rewriteRefs(node: Json): Json {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (node === null || typeof node !== 'object') return node;
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === '$schema' || key === '$id') continue;
    out[key] = key === '$ref' && typeof value === 'string' ? localRef(value) : rewriteRefs(value);
  }
  return out;
}

/** The OpenAPI document with every event schema and shared definition inlined under components. */
export function bundleOpenApi(): JsonObject {
  const doc = readJson(join(OPENAPI_DIR, 'openapi.json'));
  const common = readJson(join(OPENAPI_DIR, 'events', 'common.json'));
  const schemas: JsonObject = { ...(common.$defs as JsonObject) };
  for (const file of readdirSync(join(OPENAPI_DIR, 'events')).sort()) {
    if (file === 'common.json' || !file.endsWith('.json')) continue;
    schemas[file.slice(0, -'.json'.length)] = readJson(join(OPENAPI_DIR, 'events', file));
  }
  const components = doc.components as JsonObject;
  Object.assign(schemas, components.schemas as JsonObject);
  return rewriteRefs({ ...doc, components: { ...components, schemas } }) as JsonObject;
}

/** One invalid field: a JSON pointer into the validated value and what is wrong with it. */
export interface FieldError {
  pointer: string;
  detail: string;
}

function toFieldErrors(errors: ErrorObject[] | null | undefined, prefix: string): FieldError[] {
  return (errors ?? []).map((error) => {
    let pointer = `${prefix}${error.instancePath}`;
    let detail = error.message ?? 'is invalid';
    if (error.keyword === 'additionalProperties') {
      pointer += `/${String(error.params.additionalProperty)}`;
      detail = 'is not a known field';
    } else if (error.keyword === 'required') {
      pointer += `/${String(error.params.missingProperty)}`;
      detail = 'is required';
    } else if (error.keyword === 'enum') {
      detail = `must be one of ${(error.params.allowedValues as unknown[]).join(', ')}`;
    }
    return { pointer: pointer || '/', detail };
  });
}

export type Validator = (value: unknown) => FieldError[];

/**
 * ajv over the bundled document. `validator('#/components/schemas/CreateOrderRequest', '#/body')`
 * returns a function giving every invalid field (an empty list when the value is valid).
 */
export class Contracts {
  readonly document = bundleOpenApi();
  private readonly ajv = new Ajv2020({ allErrors: true, strict: false, coerceTypes: false });
  private readonly cache = new Map<string, ValidateFunction>();

  constructor() {
    addFormats.default(this.ajv);
    this.ajv.addSchema(this.document as object, 'openapi');
  }

  compile(pointer: string): ValidateFunction {
    let validate = this.cache.get(pointer);
    if (!validate) {
      validate = this.ajv.compile({ $ref: `openapi${pointer}` }) as ValidateFunction;
      this.cache.set(pointer, validate);
    }
    return validate;
  }

  validator(pointer: string, prefix = ''): Validator {
    const validate = this.compile(pointer);
    return (value) => (validate(value) ? [] : toFieldErrors(validate.errors, prefix));
  }

  /** A validator for a schema given inline, whose $refs point into the document. */
  inline(schema: object, prefix: string, coerce = false): Validator {
    const validate = (coerce ? this.coercing() : this.ajv).compile(rewriteInline(schema) as object);
    return (value) => (validate(value) ? [] : toFieldErrors(validate.errors, prefix));
  }

  private coercingAjv?: Ajv2020;
  /** Query and path parameters arrive as strings: this instance coerces them to the schema's types. */
  private coercing(): Ajv2020 {
    if (!this.coercingAjv) {
      this.coercingAjv = new Ajv2020({
        allErrors: true,
        strict: false,
        coerceTypes: true,
        useDefaults: true,
      });
      addFormats.default(this.coercingAjv);
      this.coercingAjv.addSchema(this.document as object, 'openapi');
    }
    return this.coercingAjv;
  }
}

function rewriteInline(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(rewriteInline);
  if (node === null || typeof node !== 'object') return node;
  return Object.fromEntries(
    Object.entries(node).map(([key, value]) => [
      key,
      key === '$ref' && typeof value === 'string' && value.startsWith('#')
        ? `openapi${value}`
        : rewriteInline(value),
    ]),
  );
}

let shared: Contracts | undefined;
/** The process-wide contracts (compiling the document takes a moment; do it once). */
export function contracts(): Contracts {
  shared ??= new Contracts();
  return shared;
}
